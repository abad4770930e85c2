/* store_kv: plugins' key-value pairs and the app-webhook replay guard. */
#ifndef MB_STORE_KV_H
#define MB_STORE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Plugins' key-value pairs, namespaced by plugin name. */
int store_kv_put(struct store *st, const char *plugin, const char *key, const char *value);
int store_kv_get(struct store *st, const char *plugin, const char *key, char **value_r);

/* Marketplace webhook replay protection (the replay guard, kept
 * replay_days): 1 first time, 0 seen before. */
int store_webhook_seen(struct store *st, const char *webhook_id, int64_t now);

#endif
