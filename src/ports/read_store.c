/* Read-store port helpers shared by every adapter and caller. */
#include "ports/read_store.h"

#include <stdlib.h>

void rs_strings_free(char **items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}
