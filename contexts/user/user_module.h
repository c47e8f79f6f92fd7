/* The user bounded context as the kernel sees it: one descriptor. */
#ifndef USER_USER_MODULE_H
#define USER_USER_MODULE_H

#include "kernel/module.h"

extern const mod_migration user_migrations[]; /* generated from contexts/user/migrations */
extern const app_module user_module;

#endif
