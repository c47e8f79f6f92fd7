/* A tiny blocking HTTP/1.1 client for tests: one request per connection, loopback only. */
#ifndef TEST_SUPPORT_HTTP_CLIENT_H
#define TEST_SUPPORT_HTTP_CLIENT_H

#include <cjson/cJSON.h>
#include <stddef.h>

typedef struct tc_header_kv {
    char *name;
    char *value;
} tc_header_kv;

typedef struct tc_response {
    int status;
    char *body; /* NUL-terminated (the NUL is not counted in body_len); never NULL on success */
    size_t body_len;
    tc_header_kv *headers;
    size_t n_headers;
    char error[160]; /* why tc_http failed, else empty */
} tc_response;

/* Sends one request to host:port (an IPv4/IPv6 literal or "localhost") and reads the whole
 * answer (Content-Length, chunked, or until close). headers: "Name: value" strings ending
 * with NULL, or NULL; Host, Content-Length and Connection: close are added. body may be
 * NULL. Returns 0, or -1 with out->error set (connection refused, timeout after 30 s,
 * malformed answer). Either way free *out with tc_response_free. */
int tc_http(const char *host, int port, const char *method, const char *path,
            const char *const *headers, const char *body, size_t body_len, tc_response *out);

/* First header with that name (case-insensitive), borrowed from r; NULL when absent. */
const char *tc_header(const tc_response *r, const char *name);

/* The body parsed as JSON, owned by the caller (cJSON_Delete); NULL when it is not JSON. */
cJSON *tc_json(const tc_response *r);

/* Frees what tc_http allocated and zeroes *r. Accepts NULL. */
void tc_response_free(tc_response *r);

/* The value of one sample of the server's GET /metrics, named as it appears there
 * ("queries_total{query=\"user.get_user\",outcome=\"ok\"}"); missing when absent. A
 * /metrics that does not answer 200 fails the test. */
double tc_metric(const char *host, int port, const char *sample, double missing);

#endif
