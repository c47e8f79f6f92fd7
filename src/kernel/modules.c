/* The contexts compiled into this binary. Adding a context is one line here. */
#include <string.h>

#include "contexts/inventory/inventory_module.h"
#include "contexts/order/order_module.h"
#include "contexts/user/user_module.h"
#include "kernel/module.h"

const app_module *const app_modules[] = {
    &user_module,
    &inventory_module,
    &order_module,
    NULL,
};

const app_module *app_module_find(const char *name)
{
    for (size_t i = 0; app_modules[i]; i++)
        if (strcmp(app_modules[i]->name, name) == 0)
            return app_modules[i];
    return NULL;
}
