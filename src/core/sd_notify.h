/* The systemd notification protocol without libsystemd: when the service runs under a unit
 * with Type=notify, systemd puts a socket's address in NOTIFY_SOCKET and waits for
 * "READY=1" before it counts the service as started (and before units ordered after it
 * start); "STOPPING=1" tells it a graceful stop has begun. "STATUS=..." shows in
 * `systemctl status`. */
#ifndef CORE_SD_NOTIFY_H
#define CORE_SD_NOTIFY_H

/* Sends state ("READY=1\nSTATUS=serving") as one datagram to $NOTIFY_SOCKET, a path or,
 * starting with '@', an abstract socket. 0 when sent or when NOTIFY_SOCKET is unset (not
 * under systemd); -1 with errno set when the address is unusable or sending fails. */
int sd_notify_state(const char *state);

#endif
