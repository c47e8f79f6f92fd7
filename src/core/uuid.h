/* UUIDs: random version 4 ids in lower-case canonical form, and their validation. */
#ifndef CORE_UUID_H
#define CORE_UUID_H

#include <stdbool.h>

#define UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Fills out with a new random (version 4) UUID. */
void uuid_v4(char out[UUID_STR_LEN]);
/* True for a lower-case canonical UUID such as "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9". */
bool uuid_valid(const char *s);

#endif
