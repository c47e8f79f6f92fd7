/* application/problem+json bodies (RFC 9457) from the process-wide app_error. */
#ifndef HTTP_PROBLEM_H
#define HTTP_PROBLEM_H

#include "core/error.h"

#define HTTP_PROBLEM_TYPE_BASE "https://problems.app.dev/"

/* {"type","title","status","detail"?,"errors"?} for err answered with the status, slug and
 * title given (NULL slug/title: those of err->code). detail is err->detail, else
 * err->message; errors only when err has field errors. The caller frees the text; NULL
 * when out of memory. */
char *http_problem_text(const app_error *err, int status, const char *slug, const char *title);

#endif
