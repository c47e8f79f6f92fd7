/* A TCP proxy in front of the tests' PostgreSQL that reads the wire protocol and, when armed,
 * breaks a connection at a chosen point of a transaction's commit: the faults a restart or a
 * network cut cause, made exact. Clients must not ask for TLS (sslmode=disable,
 * gssencmode=disable), so that every message after the startup one is typed. Loopback only. */
#ifndef TEST_SUPPORT_PG_PROXY_H
#define TEST_SUPPORT_PG_PROXY_H

typedef struct pg_proxy pg_proxy;

typedef enum pg_proxy_fault {
    PGP_PASS,              /* forward everything */
    PGP_DROP_COMMIT,       /* the client's COMMIT never reaches the server: the cut aborts it */
    PGP_LOSE_COMMIT_REPLY, /* the server commits; the client gets every answer but COMMIT's */
    PGP_LOSE_ALL_REPLIES,  /* the server commits; the client gets no answer sent after it
                              sent its COMMIT */
} pg_proxy_fault;

/* Listens on a free loopback port and forwards each connection to 127.0.0.1:target_port. */
int pg_proxy_start(pg_proxy **out, int target_port);
int pg_proxy_port(const pg_proxy *p);
/* The next COMMIT on any connection meets fault, and then that connection is cut (both
 * sides closed); later ones pass again. */
void pg_proxy_arm(pg_proxy *p, pg_proxy_fault fault);
/* Connections cut by a fault so far. */
int pg_proxy_cuts(pg_proxy *p);
void pg_proxy_stop(pg_proxy *p); /* accepts NULL; closes every connection */

#endif
