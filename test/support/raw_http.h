/* A raw HTTP/1.1 client for tests of the HTTP edge: exact bytes on a loopback socket, the
 * status, headers and body read back until the server closes. Fails the test (cmocka) only
 * where it says so. */
#ifndef TEST_SUPPORT_RAW_HTTP_H
#define TEST_SUPPORT_RAW_HTTP_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct tcli_resp {
    int status;
    char head[8192];
    char *body; /* owned; tcli_free */
    size_t body_len;
} tcli_resp;

/* A blocking loopback connection to port (receive and send time out after
 * TS_HANG_GUARD_MS, only against hangs); -1 when it cannot connect. */
int tcli_connect(int port);

/* Sends raw bytes (send errors are ignored: the server may answer before reading all) and
 * reads until the server closes. Returns 0 when a status line came back. */
int tcli_raw(int port, const char *req, size_t len, tcli_resp *out);

/* One request with "Connection: close", extra header lines (each ending in CRLF) and an
 * optional body (with its Content-Length). */
int tcli(int port, const char *method, const char *path, const char *headers, const char *body,
         tcli_resp *out);

/* Reads one answer from fd until the server closes it (tcli_raw's reading half), then closes
 * fd. */
int tcli_read(int fd, tcli_resp *out);

/* One kept-alive GET of path on fd: sends it, reads the whole answer (by its
 * Content-Length) and leaves the connection open. Returns the status, or -1; the answer's
 * head goes into head (size bytes) when head is not NULL. */
int tcli_get_keepalive(int fd, const char *path, char *head, size_t size);

void tcli_free(tcli_resp *r);

/* The value of a response header (case-insensitive name), in a thread-local buffer; NULL. */
const char *tcli_header(const tcli_resp *r, const char *name);

/* Checks the problem+json shape (status, type slug, title, X-Request-ID) and returns the
 * parsed body (caller deletes). */
cJSON *expect_problem(const tcli_resp *r, int status, const char *slug);

#endif
