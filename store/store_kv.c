/* store_kv: plugins' key-value pairs and the app-webhook replay guard (store_kv.h). */
#include "store_private.h"
#include "store_kv.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

int
store_webhook_seen(struct store *st, const char *webhook_id, int64_t now)
{
	int r = store_exec_durable(st, "INSERT INTO replay_guard (fp, at) VALUES (mb_fp('app:' || ?1), ?2) "
	    "ON CONFLICT DO NOTHING", "si", webhook_id, now);
	return r < 0 ? -1 : r;
}

int
store_kv_put(struct store *st, const char *plugin, const char *key, const char *value)
{
	return store_exec_durable(st, "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES (?1,?2,?3,?4) "
	    "ON CONFLICT(plugin, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
	    "sssi", plugin, key, value, now_ms()) < 0 ? -1 : 1;
}

int
store_kv_get(struct store *st, const char *plugin, const char *key, char **value_r)
{
	*value_r = NULL;
	return store_query_row(st, store_row_text, value_r, "SELECT value FROM plugin_kv WHERE plugin=?1 AND key=?2",
	    "ss", plugin, key);
}
