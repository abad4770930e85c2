/* Fuzz target: the calllog plugin's CDR handler, driven through its own
 * plugin descriptor with a host table that accepts every call log (so
 * the fuzzer reaches the whole handler, not just the refusals). */
#include "plugin.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern const struct mb_plugin mailbridge_plugin;

static void f_log(struct mb_ctx *c, int l, const char *m) { (void)c; (void)l; (void)m; }
static const char *f_config(struct mb_ctx *c, const char *k) { (void)c; (void)k; return NULL; }
static int
f_log_call(struct mb_ctx *c, const char *loc, int in, const char *from, const char *to, const char *st,
    const char *rec, char **err)
{
	(void)c; (void)loc; (void)in; (void)from; (void)to; (void)st; (void)rec; (void)err;
	return 1;
}
static const char *f_query(const struct mb_http_request *r, const char *n) { (void)r; (void)n; return NULL; }

static const struct mb_host host = { .abi = MB_PLUGIN_ABI, .log = f_log, .config = f_config, .log_call = f_log_call };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static void *state;
	char *body = malloc(size + 1);
	struct mb_http_request req = { "POST", "/cdr", body, size, f_query, NULL, f_query, NULL, "fuzz" };
	struct mb_http_response resp = { 0, NULL, NULL };
	char *err = NULL;

	if (!state)
		state = mailbridge_plugin.init(&host, NULL, &err);
	memcpy(body, data, size);
	body[size] = '\0';
	mailbridge_plugin.http(state, &req, &resp);
	free(resp.body);
	free(body);
	return 0;
}
