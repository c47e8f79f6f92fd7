/* libFuzzer: any bytes through the request framing guard, split where the input says, with
 * its promises checked: the same verdict however the bytes are split, nothing accepted past a
 * refusal, every bound held. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = 1 + data[0] % 64; /* how the bytes arrive */
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    http_guard whole, split;
    http_guard_init(&whole, 4096);
    http_guard_init(&split, 4096);
    size_t a = http_guard_feed(&whole, p, n), b = 0;
    for (size_t off = 0; off < n && split.phase != HTTP_GUARD_FAILED; off += step)
        b += http_guard_feed(&split, p + off, n - off < step ? n - off : step);
    if (a != b || whole.status != split.status || whole.phase != split.phase)
        abort(); /* the verdict must not depend on how the bytes arrive */
    if (whole.phase == HTTP_GUARD_FAILED) {
        if (a >= n || !whole.reason[0])
            abort();
        if (whole.status != 400 && whole.status != 405 && whole.status != 413 &&
            whole.status != 414 && whole.status != 431 && whole.status != 501)
            abort();
        if (strlen(whole.target) >= sizeof whole.target)
            abort();
    }
    if (whole.head_len > HTTP_GUARD_MAX_HEAD || whole.line_len > HTTP_GUARD_MAX_LINE)
        abort();
    return 0;
}
