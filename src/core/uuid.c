/* Random UUIDs from the kernel's CSPRNG. Each thread draws the kernel's random bytes a pool at
 * a time (one getrandom call for many ids, where every request makes two or more), and a
 * child after fork() never reuses its parent's pool. */
#include "core/uuid.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>

#define UUID_POOL 512 /* bytes: 32 ids per refill */

static _Thread_local uint8_t pool[UUID_POOL];
static _Thread_local size_t pool_left; /* unused bytes at the end of pool */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

/* In the child, on the thread that forked (the only one there): what is left was the
 * parent's too. */
static void pool_forget(void)
{
    pool_left = 0;
}

static void fork_watch(void)
{
    pthread_atfork(NULL, NULL, pool_forget);
}

static void pool_take(uint8_t *out, size_t n)
{
    if (pool_left < n) {
        pthread_once(&fork_once, fork_watch);
        size_t got = 0;
        while (got < sizeof pool) {
            ssize_t r = getrandom(pool + got, sizeof pool - got, 0);
            if (r > 0)
                got += (size_t)r;
        }
        pool_left = sizeof pool;
    }
    uint8_t *from = pool + sizeof pool - pool_left;
    memcpy(out, from, n);
    memset(from, 0, n); /* a byte is handed out once */
    pool_left -= n;
}

void uuid_v4(char out[UUID_STR_LEN])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    pool_take(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    char *o = out;
    for (size_t i = 0; i < sizeof b; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 0x0f];
    }
    *o = '\0';
}

bool uuid_valid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}
