/* The order context's descriptor, loaded by the kernel. */
#ifndef ORDER_ORDER_MODULE_H
#define ORDER_ORDER_MODULE_H

#include "kernel/module.h"

extern const mod_migration order_migrations[]; /* generated from its migrations */
extern const app_module order_module;

#endif
