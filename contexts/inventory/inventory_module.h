/* The inventory context's descriptor, loaded by the kernel. */
#ifndef INVENTORY_INVENTORY_MODULE_H
#define INVENTORY_INVENTORY_MODULE_H

#include "kernel/module.h"

extern const mod_migration inventory_migrations[]; /* generated from its migrations */
extern const app_module inventory_module;

#endif
