/* The wire-protocol proxy of pg_proxy.h: one thread accepts, one thread per connection moves
 * whole messages each way, and watches for COMMIT: a Parse or Query message "COMMIT" from the
 * client, a CommandComplete "COMMIT" from the server. */
#include "test/support/pg_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PGP_MAX_CONNS 64

typedef struct pgp_buf {
    unsigned char *data;
    size_t len, cap;
} pgp_buf;

typedef struct pgp_conn {
    pg_proxy *proxy;
    int client, server;
    pthread_t thread;
    bool started;
    bool startup_done;    /* the client's untyped startup message went by */
    pg_proxy_fault fault; /* taken at this connection's COMMIT */
    bool commit_sent;     /* the client's COMMIT went to the server (LOSE_* faults) */
    pgp_buf from_client, from_server;
} pgp_conn;

struct pg_proxy {
    int listener, target_port, port;
    int stop_pipe[2];
    pthread_t acceptor;
    _Atomic int armed; /* pg_proxy_fault */
    atomic_int cuts;
    pthread_mutex_t lock;
    pgp_conn *conns[PGP_MAX_CONNS];
    size_t n_conns;
};

static bool buf_add(pgp_buf *b, const unsigned char *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown)
            return false;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return true;
}

static void buf_drop(pgp_buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static bool send_all(int fd, const unsigned char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        data += w;
        n -= (size_t)w;
    }
    return true;
}

/* The length of the whole next message in b (0: not all of it is here yet). */
static size_t next_message(const pgp_buf *b, bool typed)
{
    size_t head = typed ? 5 : 4;
    if (b->len < head)
        return 0;
    size_t len = be32(b->data + (typed ? 1 : 0)) + (typed ? 1 : 0);
    return b->len >= len ? len : 0;
}

/* Whether a client message (typed) is the statement COMMIT: a Query, or a Parse whose
 * statement text (after the statement's name) is COMMIT. */
static bool client_commit(const unsigned char *m, size_t n)
{
    const char *body = (const char *)m + 5, *end = (const char *)m + n;
    if (m[0] == 'Q')
        return strncmp(body, "COMMIT", (size_t)(end - body)) == 0;
    if (m[0] != 'P')
        return false;
    const char *query = memchr(body, '\0', (size_t)(end - body));
    return query && query + 1 < end && strncmp(query + 1, "COMMIT", (size_t)(end - query - 1)) == 0;
}

static bool server_commit_done(const unsigned char *m, size_t n)
{
    return m[0] == 'C' && n >= 5 + 7 && memcmp(m + 5, "COMMIT", 7) == 0;
}

/* Moves whole messages from the client; false when the connection is to be cut. */
static bool pump_client(pgp_conn *c)
{
    size_t n;
    while ((n = next_message(&c->from_client, c->startup_done)) > 0) {
        const unsigned char *m = c->from_client.data;
        bool typed = c->startup_done;
        c->startup_done = true;
        if (typed && c->fault == PGP_PASS && client_commit(m, n)) {
            c->fault = (pg_proxy_fault)atomic_exchange(&c->proxy->armed, PGP_PASS);
            if (c->fault == PGP_DROP_COMMIT)
                return false;
            c->commit_sent = c->fault != PGP_PASS;
        }
        if (!send_all(c->server, m, n))
            return false;
        buf_drop(&c->from_client, n);
    }
    return true;
}

/* Moves whole messages from the server; false when the connection is to be cut. */
static bool pump_server(pgp_conn *c)
{
    size_t n;
    while ((n = next_message(&c->from_server, true)) > 0) {
        const unsigned char *m = c->from_server.data;
        if (c->commit_sent && server_commit_done(m, n))
            return false; /* committed; this answer, and the rest, are lost */
        bool lost = c->commit_sent && c->fault == PGP_LOSE_ALL_REPLIES;
        if (!lost && !send_all(c->client, m, n))
            return false;
        buf_drop(&c->from_server, n);
    }
    return true;
}

static void *conn_main(void *arg)
{
    pgp_conn *c = arg;
    unsigned char chunk[16384];
    bool cut = false;
    for (;;) {
        struct pollfd fds[3] = {
            {c->client, POLLIN, 0}, {c->server, POLLIN, 0}, {c->proxy->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[2].revents)
            break;
        bool ok = true;
        for (int side = 0; side < 2 && ok; side++) {
            if (!fds[side].revents)
                continue;
            ssize_t r = recv(fds[side].fd, chunk, sizeof chunk, 0);
            if (r <= 0) {
                ok = false;
                break;
            }
            pgp_buf *b = side == 0 ? &c->from_client : &c->from_server;
            ok = buf_add(b, chunk, (size_t)r);
            if (ok)
                ok = side == 0 ? pump_client(c) : pump_server(c);
            if (!ok && c->fault != PGP_PASS)
                cut = true;
        }
        if (!ok)
            break;
    }
    if (cut)
        atomic_fetch_add(&c->proxy->cuts, 1);
    shutdown(c->client, SHUT_RDWR);
    shutdown(c->server, SHUT_RDWR);
    return NULL;
}

static int connect_target(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    return -1;
}

static void *acceptor_main(void *arg)
{
    pg_proxy *p = arg;
    for (;;) {
        struct pollfd fds[2] = {{p->listener, POLLIN, 0}, {p->stop_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        if (fds[1].revents)
            break;
        if (!fds[0].revents)
            continue;
        int client = accept4(p->listener, NULL, NULL, SOCK_CLOEXEC);
        if (client < 0)
            continue;
        int server = connect_target(p->target_port);
        pgp_conn *c = server >= 0 ? calloc(1, sizeof *c) : NULL;
        pthread_mutex_lock(&p->lock);
        bool room = c && p->n_conns < PGP_MAX_CONNS;
        if (room) {
            c->proxy = p;
            c->client = client;
            c->server = server;
            c->started = pthread_create(&c->thread, NULL, conn_main, c) == 0;
            p->conns[p->n_conns++] = c;
        }
        pthread_mutex_unlock(&p->lock);
        if (!room || !c->started) {
            close(client); /* the client sees the server go away */
            if (server >= 0 && !room)
                close(server);
            if (!room)
                free(c);
        }
    }
    return NULL;
}

int pg_proxy_start(pg_proxy **out, int target_port)
{
    pg_proxy *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->target_port = target_port;
    pthread_mutex_init(&p->lock, NULL);
    atomic_store(&p->armed, PGP_PASS);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    p->listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (p->listener < 0 || bind(p->listener, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(p->listener, 64) != 0 || getsockname(p->listener, (struct sockaddr *)&sa, &len) ||
        pipe2(p->stop_pipe, O_CLOEXEC) != 0 ||
        pthread_create(&p->acceptor, NULL, acceptor_main, p) != 0) {
        if (p->listener >= 0)
            close(p->listener);
        free(p);
        return -1;
    }
    p->port = ntohs(sa.sin_port);
    *out = p;
    return 0;
}

int pg_proxy_port(const pg_proxy *p)
{
    return p->port;
}

void pg_proxy_arm(pg_proxy *p, pg_proxy_fault fault)
{
    atomic_store(&p->armed, fault);
}

int pg_proxy_cuts(pg_proxy *p)
{
    return atomic_load(&p->cuts);
}

void pg_proxy_stop(pg_proxy *p)
{
    if (!p)
        return;
    if (write(p->stop_pipe[1], "x", 1) != 1) {
        /* the threads then end with their sockets */
    }
    pthread_join(p->acceptor, NULL);
    for (size_t i = 0; i < p->n_conns; i++) {
        pgp_conn *c = p->conns[i];
        if (c->started)
            pthread_join(c->thread, NULL);
        close(c->client);
        close(c->server);
        free(c->from_client.data);
        free(c->from_server.data);
        free(c);
    }
    close(p->listener);
    close(p->stop_pipe[0]);
    close(p->stop_pipe[1]);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
