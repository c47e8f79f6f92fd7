/* The systemd notification datagram: sent to a path socket and to an abstract one, nothing
 * without NOTIFY_SOCKET, a clear failure for an address that cannot be one. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/sd_notify.h"

/* A datagram socket bound to name (a path, or "@..." for the abstract namespace). */
static int listen_on(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    assert_int_equal(
        bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
        0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_path_socket(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/app-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = listen_on(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(sd_notify_state("READY=1\nSTATUS=serving on 127.0.0.1:8080"), 0);
    expect_datagram(fd, "READY=1\nSTATUS=serving on 127.0.0.1:8080");
    assert_int_equal(sd_notify_state("STOPPING=1"), 0);
    expect_datagram(fd, "STOPPING=1");
    close(fd);
    unlink(path);
    /* Nobody listening any more: a failure the caller can report. */
    assert_int_equal(sd_notify_state("READY=1"), -1);
    assert_int_equal(errno, ENOENT);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void **state)
{
    (void)state;
    char name[64];
    snprintf(name, sizeof name, "@app-notify-test-%d", (int)getpid());
    int fd = listen_on(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_state("READY=1"), 0);
    expect_datagram(fd, "READY=1");
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_not_under_systemd(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sd_notify_state("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sd_notify_state("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(sd_notify_state("READY=1"), -1);
    assert_int_equal(errno, EINVAL);
    char too_long[200];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[0] = '/';
    too_long[sizeof too_long - 1] = '\0';
    setenv("NOTIFY_SOCKET", too_long, 1);
    assert_int_equal(sd_notify_state("READY=1"), -1);
    assert_int_equal(errno, EINVAL);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_socket),
        cmocka_unit_test(test_abstract_socket),
        cmocka_unit_test(test_not_under_systemd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
