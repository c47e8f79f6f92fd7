/* Shared by the harness's must-fail programs: where the stand-in app that leaks is. */
#ifndef TEST_HARNESS_HARNESS_H
#define TEST_HARNESS_HARNESS_H

#include <stdlib.h>

/* Makes ts_app_start run test/harness/leaky_app instead of the real app. */
static inline void harness_use_leaky_app(void)
{
    setenv("APP_TEST_APP_BINARY", "build/test/test/harness/leaky_app", 1);
}

#endif
