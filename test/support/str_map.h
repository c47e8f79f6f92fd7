/* A map from strings to numbers, for tests that check tens of thousands of ids (event ids,
 * streams) and would otherwise search a list for each. Open addressing; keys are copied. */
#ifndef TEST_SUPPORT_STR_MAP_H
#define TEST_SUPPORT_STR_MAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ts_map ts_map;

ts_map *ts_map_new(void);    /* aborts when out of memory, as the test could not go on */
void ts_map_free(ts_map *m); /* accepts NULL */

/* Sets key to value; returns whether key was new. */
bool ts_map_put(ts_map *m, const char *key, long long value);
/* Whether key is in m; its value into *value (when not NULL). */
bool ts_map_get(const ts_map *m, const char *key, long long *value);
size_t ts_map_size(const ts_map *m);

#endif
