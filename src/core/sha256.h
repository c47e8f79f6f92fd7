/* SHA-256 (FIPS 180-4), for fingerprints such as the request an Idempotency-Key was first
 * used with. Not for secrets: no constant-time guarantees are made. */
#ifndef CORE_SHA256_H
#define CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_LEN 32
#define SHA256_HEX_LEN    (SHA256_DIGEST_LEN * 2 + 1)

typedef struct sha256_ctx {
    uint32_t state[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes waiting in block */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
void sha256_final(sha256_ctx *c, uint8_t out[SHA256_DIGEST_LEN]);

/* The digest of the concatenated final state as lower-case hex, NUL terminated. */
void sha256_final_hex(sha256_ctx *c, char out[SHA256_HEX_LEN]);

#endif
