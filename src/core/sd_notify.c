/* One datagram to $NOTIFY_SOCKET (see sd_notify.h). */
#include "core/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int sd_notify_state(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0])
        return 0;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t n = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || n < 2 || n >= sizeof sa.sun_path) {
        errno = EINVAL;
        return -1;
    }
    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract: the name is exactly the n bytes, no terminator */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);

    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    size_t size = strlen(state);
    ssize_t sent;
    do
        sent = sendto(fd, state, size, MSG_NOSIGNAL, (const struct sockaddr *)&sa, len);
    while (sent < 0 && errno == EINTR);
    int saved = errno;
    close(fd);
    if (sent != (ssize_t)size) {
        errno = sent < 0 ? saved : EMSGSIZE;
        return -1;
    }
    return 0;
}
