/* Reading YAML files in tests (docs/openapi.yaml, deploy/kong/kong.yml) with libyaml's
 * document API. */
#ifndef TEST_SUPPORT_YAML_DOC_H
#define TEST_SUPPORT_YAML_DOC_H

#include <stddef.h>
#include <yaml.h>

/* Loads the first document of path (relative to the repository root) into *doc; on
 * failure prints why, naming the file, and returns -1. Free with yaml_document_delete. */
int ty_load(const char *path, yaml_document_t *doc);

/* The value under key in a mapping node, or NULL (also when map is NULL or no mapping). */
yaml_node_t *ty_get(yaml_document_t *doc, const yaml_node_t *map, const char *key);

#endif
