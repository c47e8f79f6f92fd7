/* A stand-in for the app that leaks at exit, for the harness's own checks: it answers 200
 * to every request on APP_HTTP_LISTEN (so ts_app_start sees it live), and on SIGTERM drops
 * a heap block and exits 0, so only LeakSanitizer's report at exit tells that it went
 * wrong. Not a test itself: test/run.sh runs only test_* and must_fail_* programs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

/* The block escapes through a volatile store, so the compiler keeps it, and is then
 * forgotten: nothing points to it when the process exits. */
static void *volatile last_block;

static __attribute__((noinline)) void leak_a_block(void)
{
    char *p = malloc(4096);
    if (p)
        memset(p, 'x', 4096);
    last_block = p;
    last_block = NULL;
}

static int listen_on(const char *spec)
{
    const char *colon = spec ? strrchr(spec, ':') : NULL;
    if (!colon)
        return -1;
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 16) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void answer(int fd)
{
    char req[4096];
    if (read(fd, req, sizeof req) <= 0)
        return;
    static const char reply[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                "Content-Length: 3\r\nConnection: close\r\n\r\nok\n";
    if (write(fd, reply, sizeof reply - 1) < 0)
        return;
}

int main(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    int lfd = listen_on(getenv("APP_HTTP_LISTEN"));
    if (lfd < 0) {
        fprintf(stderr, "leaky_app: cannot listen on APP_HTTP_LISTEN=%s: %s\n",
                getenv("APP_HTTP_LISTEN") ? getenv("APP_HTTP_LISTEN") : "(unset)", strerror(errno));
        return 1;
    }
    fprintf(stderr, "leaky_app: serving; it leaks a block when it stops\n");
    while (!stopping) {
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
            continue;
        answer(c);
        close(c);
    }
    close(lfd);
    leak_a_block();
    fprintf(stderr, "leaky_app: stopped\n");
    return 0;
}
