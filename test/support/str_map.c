/* A map from strings to numbers: FNV-1a, linear probing, doubled at 70 % full. */
#include "test/support/str_map.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    char *key; /* NULL: empty */
    long long value;
} slot;

struct ts_map {
    slot *slots;
    size_t cap; /* a power of two */
    size_t size;
};

static void *must(void *p)
{
    if (!p) {
        fprintf(stderr, "ts_map: out of memory\n");
        abort();
    }
    return p;
}

static uint64_t hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static slot *find(slot *slots, size_t cap, const char *key)
{
    size_t i = (size_t)hash(key) & (cap - 1);
    while (slots[i].key && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

ts_map *ts_map_new(void)
{
    ts_map *m = must(calloc(1, sizeof *m));
    m->cap = 1024;
    m->slots = must(calloc(m->cap, sizeof *m->slots));
    return m;
}

void ts_map_free(ts_map *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
}

static void grow(ts_map *m)
{
    size_t cap = m->cap * 2;
    slot *slots = must(calloc(cap, sizeof *slots));
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            *find(slots, cap, m->slots[i].key) = m->slots[i];
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
}

bool ts_map_put(ts_map *m, const char *key, long long value)
{
    if ((m->size + 1) * 10 > m->cap * 7)
        grow(m);
    slot *s = find(m->slots, m->cap, key);
    bool fresh = s->key == NULL;
    if (fresh) {
        s->key = must(strdup(key));
        m->size++;
    }
    s->value = value;
    return fresh;
}

bool ts_map_get(const ts_map *m, const char *key, long long *value)
{
    const slot *s = find(m->slots, m->cap, key);
    if (!s->key)
        return false;
    if (value)
        *value = s->value;
    return true;
}

size_t ts_map_size(const ts_map *m)
{
    return m->size;
}
