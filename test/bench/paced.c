/* paced: an HTTP/1.1 load generator that sends at a constant rate and reports latency
 * percentiles, for make bench's latency figures (wrk sends as fast as answers come, so its
 * latencies hide the queueing a steady arrival rate causes; wrk2 is not in Debian).
 *
 *   paced -a 127.0.0.1:8080 -r RATE -d SECONDS [-c CONNECTIONS] [-m METHOD] [-p PATH]
 *         [-b BODY]
 *
 * Every connection sends on its own schedule: one request every CONNECTIONS/RATE seconds,
 * the schedules spread evenly. A request is timed from when the schedule meant it to go, not
 * from when it went: a connection still waiting for an answer sends late, and the wait is
 * counted (so the figures do not suffer from coordinated omission). In PATH and BODY, each
 * "%n" becomes a number no other request of the run uses (unique emails, say). Requests are
 * plain keep-alive HTTP/1.1, one at a time per connection, on loopback. Prints one line:
 *   rate=R sent=N ok=N failed=N p50_ms= p90_ms= p99_ms= p999_ms= max_ms=
 * and exits 1 when any request failed (not 2xx, or a broken connection). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#define MAX_CONNS 1024
#define BUF_SIZE  65536

typedef struct conn {
    int fd;
    int64_t next_ns;     /* when its next request is due */
    int64_t intended_ns; /* when the one in flight was due; 0: idle */
    char in[BUF_SIZE];
    size_t in_len;
} conn;

static struct {
    struct sockaddr_in addr;
    const char *method, *path, *body;
    long counter;
    int64_t *latencies; /* ns, one per answered request */
    size_t n_lat, cap_lat;
    long sent, ok, failed;
} g = {.method = "GET", .path = "/", .body = NULL};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "paced: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int conn_open(int ep, conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&g.addr, sizeof g.addr) != 0)
        die("connect");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
    c->in_len = 0;
    c->intended_ns = 0;
    return 0;
}

/* s with each "%n" replaced by n, into out. */
static size_t expand(const char *s, long n, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = s; *p && o + 24 < size; p++) {
        if (p[0] == '%' && p[1] == 'n') {
            o += (size_t)snprintf(out + o, size - o, "%ld", n);
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return o;
}

static void conn_send(conn *c, int64_t intended)
{
    char path[1024], body[4096], req[6144];
    long n = ++g.counter;
    expand(g.path, n, path, sizeof path);
    int len;
    if (g.body) {
        size_t body_len = expand(g.body, n, body, sizeof body);
        len = snprintf(req, sizeof req,
                       "%s %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       g.method, path, body_len, body);
    } else {
        len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: bench\r\n\r\n", g.method, path);
    }
    for (int off = 0; off < len;) {
        ssize_t w = write(c->fd, req + off, (size_t)(len - off));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write");
        off += (int)w;
    }
    c->intended_ns = intended;
    g.sent++;
}

/* A whole answer at the start of c->in: its length, or 0 while incomplete; *closes when it
 * says the server closes the connection after it. */
static size_t answer_length(const conn *c, int *status, bool *closes)
{
    const char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!end)
        return 0;
    size_t head = (size_t)(end - c->in) + 4, body = 0;
    *status = c->in_len > 12 ? atoi(c->in + 9) : 0;
    *closes = false;
    for (const char *p = c->in; p < end; p++) {
        if (strncasecmp(p, "\r\ncontent-length:", 17) == 0)
            body = strtoul(p + 17, NULL, 10);
        else if (strncasecmp(p, "\r\nconnection: close", 19) == 0)
            *closes = true;
    }
    return c->in_len >= head + body ? head + body : 0;
}

static void record(int64_t ns)
{
    if (g.n_lat == g.cap_lat) {
        g.cap_lat = g.cap_lat ? g.cap_lat * 2 : 65536;
        g.latencies = realloc(g.latencies, g.cap_lat * sizeof *g.latencies);
        if (!g.latencies)
            die("realloc");
    }
    g.latencies[g.n_lat++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(double p)
{
    if (!g.n_lat)
        return 0;
    size_t i = (size_t)(p * (double)(g.n_lat - 1) + 0.5);
    return (double)g.latencies[i] / 1e6;
}

int main(int argc, char **argv)
{
    const char *address = "127.0.0.1:8080";
    double rate = 1000, seconds = 10;
    int n_conns = 32, opt;
    while ((opt = getopt(argc, argv, "a:r:d:c:m:p:b:")) != -1) {
        switch (opt) {
        case 'a':
            address = optarg;
            break;
        case 'r':
            rate = atof(optarg);
            break;
        case 'd':
            seconds = atof(optarg);
            break;
        case 'c':
            n_conns = atoi(optarg);
            break;
        case 'm':
            g.method = optarg;
            break;
        case 'p':
            g.path = optarg;
            break;
        case 'b':
            g.body = optarg;
            break;
        default:
            fprintf(stderr, "usage: paced -a HOST:PORT -r RATE -d SECONDS [-c CONNECTIONS]"
                            " [-m METHOD] [-p PATH] [-b BODY]\n");
            return 2;
        }
    }
    char host[64];
    const char *colon = strrchr(address, ':');
    if (!colon || rate <= 0 || seconds <= 0 || n_conns < 1 || n_conns > MAX_CONNS ||
        (size_t)(colon - address) >= sizeof host) {
        fprintf(stderr, "paced: bad arguments\n");
        return 2;
    }
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    g.addr.sin_family = AF_INET;
    g.addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &g.addr.sin_addr) != 1) {
        fprintf(stderr, "paced: %s is not an IPv4 address\n", host);
        return 2;
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    conn *conns = calloc((size_t)n_conns, sizeof *conns);
    if (!conns)
        die("calloc");
    int64_t interval = (int64_t)(1e9 * n_conns / rate), start = now_ns() + 10000000;
    int64_t stop = start + (int64_t)(seconds * 1e9);
    for (int i = 0; i < n_conns; i++) {
        conn_open(ep, &conns[i]);
        conns[i].next_ns = start + interval * i / n_conns;
    }

    for (;;) {
        int64_t now = now_ns(), wake = INT64_MAX;
        bool busy = false;
        for (int i = 0; i < n_conns; i++) {
            conn *c = &conns[i];
            if (c->intended_ns) {
                busy = true;
                continue;
            }
            if (c->next_ns >= stop)
                continue;
            if (c->next_ns <= now) {
                conn_send(c, c->next_ns);
                c->next_ns += interval;
                busy = true;
            } else if (c->next_ns < wake) {
                wake = c->next_ns;
            }
        }
        if (now >= stop) {
            if (!busy)
                break;
            if (now > stop + 30000000000LL) { /* answers 30 s late: give up on them */
                for (int i = 0; i < n_conns; i++)
                    g.failed += conns[i].intended_ns != 0;
                break;
            }
        }
        /* Sleep until the next send is due, to the nanosecond: a timeout in whole
         * milliseconds is 0 whenever the next send is less than 1 ms away (at 4,000/s it
         * always is), and the client then spun a core the server it measures needed. */
        int64_t wait_ns = wake == INT64_MAX ? 100000000 : wake - now;
        struct timespec timeout = {(time_t)(wait_ns > 0 ? wait_ns / 1000000000 : 0),
                                   (long)(wait_ns > 0 ? wait_ns % 1000000000 : 0)};
        struct epoll_event evs[64];
        int n = epoll_pwait2(ep, evs, 64, &timeout, NULL);
        if (n < 0 && errno != EINTR)
            die("epoll_pwait2");
        for (int e = 0; e < n; e++) {
            conn *c = evs[e].data.ptr;
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                /* Closed (or broken): what was in flight failed; reconnect. */
                if (c->intended_ns)
                    g.failed++;
                close(c->fd);
                conn_open(ep, c);
                continue;
            }
            c->in_len += (size_t)r;
            int status = 0;
            size_t len;
            bool closes = false;
            while (c->intended_ns && (len = answer_length(c, &status, &closes)) > 0) {
                int64_t t = now_ns();
                record(t - c->intended_ns);
                if (status >= 200 && status < 300)
                    g.ok++;
                else
                    g.failed++;
                c->intended_ns = 0;
                memmove(c->in, c->in + len, c->in_len - len);
                c->in_len -= len;
                if (closes) { /* the server's limit of requests per connection */
                    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                    close(c->fd);
                    conn_open(ep, c);
                }
                if (c->next_ns <= t && c->next_ns < stop) { /* late: send at once */
                    conn_send(c, c->next_ns);
                    c->next_ns += interval;
                }
            }
            if (c->in_len == sizeof c->in) {
                fprintf(stderr, "paced: an answer larger than %d bytes\n", BUF_SIZE);
                return 2;
            }
        }
    }
    qsort(g.latencies, g.n_lat, sizeof *g.latencies, cmp_i64);
    printf("rate=%.0f sent=%ld ok=%ld failed=%ld p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f "
           "p999_ms=%.2f max_ms=%.2f\n",
           rate, g.sent, g.ok, g.failed, pct(0.5), pct(0.9), pct(0.99), pct(0.999),
           g.n_lat ? (double)g.latencies[g.n_lat - 1] / 1e6 : 0);
    for (int i = 0; i < n_conns; i++)
        close(conns[i].fd);
    close(ep);
    free(conns);
    free(g.latencies);
    return g.failed ? 1 : 0;
}
