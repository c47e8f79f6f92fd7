/* The request framing guard: an incremental checker of the bytes a client sends, run before
 * libevent's parser sees them. It bounds every line and every part of a request (request
 * line, header lines, the header block, chunk-size lines, the body) and refuses the forms
 * that make request smuggling possible, so that no byte sequence can make the server hold
 * more than its limits or read one request where a proxy saw another. Pure and small (a few
 * kilobyte per connection, no allocation): it keeps state, not data. */
#ifndef HTTP_GUARD_H
#define HTTP_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_GUARD_MAX_LINE       8192  /* request line, and each header line */
#define HTTP_GUARD_MAX_HEAD       65536 /* the whole header block */
#define HTTP_GUARD_MAX_CHUNK_LINE 256   /* a chunk-size line with its extensions */
#define HTTP_GUARD_TARGET_KEEP    512   /* the target kept to name a refused request's resource */

typedef enum http_guard_phase {
    HTTP_GUARD_IDLE, /* between requests: nothing of the next one has come */
    HTTP_GUARD_HEAD, /* the request line or headers are coming */
    HTTP_GUARD_BODY, /* the body is coming */
    HTTP_GUARD_FAILED,
} http_guard_phase;

typedef struct http_guard {
    uint64_t max_body;      /* the body limit, chunked or not */
    int state;              /* private */
    http_guard_phase phase; /* what the connection waits for */
    size_t line_len;        /* bytes of the current line so far */
    size_t head_len;        /* bytes of the current header block so far */
    char method[16];
    char version[12];
    size_t method_len, version_len, target_len;
    char target[HTTP_GUARD_TARGET_KEEP]; /* its first bytes, NUL-terminated */
    bool method_unknown;                 /* not one of HTTP's (cut at 15 characters) */
    bool body_refused;                   /* a GET or HEAD with a body (400) */
    char name[32];                       /* the current header's name, lower-cased, cut at 31 */
    char shown[32];                      /* the same as sent, for messages */
    size_t name_len;
    char value[48]; /* the value of a framing header (Content-Length, Transfer-Encoding) */
    size_t value_len;
    bool value_long;
    bool has_length, chunked, has_te;
    uint64_t length;    /* Content-Length */
    uint64_t remaining; /* of the body or the current chunk */
    uint64_t body_seen; /* chunk data so far */
    uint64_t chunk_size;
    int chunk_digits;
    bool chunk_ext;
    uint64_t requests; /* whose head was complete */
    int status;        /* when FAILED: 400, 405, 413, 414, 431 or 501 */
    char reason[96];   /* when FAILED: why, for people */
} http_guard;

/* A refusal with status 405 concerns a method that no resource here accepts: one HTTP does
 * not define (method_unknown), or TRACE with a body. The caller names the methods that the
 * target accepts (Allow), or answers 404 or 501 when no resource is there. A GET or HEAD with
 * a body (body_refused) is 400 where the target accepts the method; the caller may answer
 * 404 or 405 first, as for any request to a resource that is not there or takes other
 * methods. */

/* A fresh guard for a connection whose bodies may hold max_body bytes. */
void http_guard_init(http_guard *g, uint64_t max_body);

/* Checks the next n bytes of the connection. Returns how many of them may go on to the
 * parser: all n while the stream is acceptable; fewer when it is not, and then the guard is
 * FAILED with its status and reason, and everything after that point must be dropped. */
size_t http_guard_feed(http_guard *g, const char *p, size_t n);

#endif
