/* The contexts compiled into this binary. Adding a context is one line here. */
#include <stdbool.h>
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

static const app_module *find_in(const app_module *const *all, const char *name, size_t len)
{
    for (size_t i = 0; all[i]; i++)
        if (strlen(all[i]->name) == len && strncmp(all[i]->name, name, len) == 0)
            return all[i];
    return NULL;
}

static bool handles(const bus_handler_def *table, const char *name)
{
    for (size_t i = 0; table && table[i].name; i++)
        if (strcmp(table[i].name, name) == 0)
            return true;
    return false;
}

static bool served(const app_module *owner, const app_module *const *loaded, size_t n,
                   const char *const *remotes, size_t n_remotes)
{
    for (size_t i = 0; i < n; i++)
        if (loaded[i] == owner)
            return true;
    for (size_t i = 0; i < n_remotes; i++)
        if (strcmp(remotes[i], owner->name) == 0)
            return true;
    return false;
}

int mod_check_contracts(const app_module *const *loaded, size_t n, const app_module *const *all,
                        const char *const *remotes, size_t n_remotes, app_error *err)
{
    for (size_t i = 0; i < n; i++) {
        const app_module *m = loaded[i];
        for (size_t k = 0; m->sends && m->sends[k]; k++) {
            const char *name = m->sends[k];
            const char *dot = strchr(name, '.');
            const app_module *owner = dot ? find_in(all, name, (size_t)(dot - name)) : NULL;
            if (!owner)
                return app_error_set(err, APP_ECONFIG,
                                     "context %s sends \"%s\", which names no context of this "
                                     "build",
                                     m->name, name);
            if (!handles(owner->commands, name) && !handles(owner->queries, name))
                return app_error_set(err, APP_ECONFIG,
                                     "context %s sends \"%s\", which context %s does not handle",
                                     m->name, name, owner->name);
            if (!served(owner, loaded, n, remotes, n_remotes))
                return app_error_set(err, APP_ECONFIG,
                                     "context %s sends \"%s\", but context %s is not loaded here "
                                     "and has no remote.%s",
                                     m->name, name, owner->name, owner->name);
        }
        for (const mod_subscription *s = m->subscriptions; s && s->name; s++)
            if (!find_in(all, s->source_context, strlen(s->source_context)))
                return app_error_set(err, APP_ECONFIG,
                                     "subscription %s of context %s reads the log of \"%s\", "
                                     "which is no context of this build",
                                     s->name, m->name, s->source_context);
    }
    return 0;
}

const app_module *app_module_find(const char *name)
{
    for (size_t i = 0; app_modules[i]; i++)
        if (strcmp(app_modules[i]->name, name) == 0)
            return app_modules[i];
    return NULL;
}
