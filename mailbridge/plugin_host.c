#include "plugin_host.h"
#include "app.h"
#include "calllog.h"
#include "config.h"
#include "contact.h"
#include "ghl.h"
#include "jobs.h"
#include "log.h"
#include "netaddr.h"
#include "store_jobs.h"
#include "store_kv.h"
#include "util.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct mb_ctx {
	struct app *app;
	struct loaded_plugin *plugin;
};

struct loaded_plugin {
	char *name;
	void *dl;
	const struct mb_plugin *api;
	void *state;
	struct mb_ctx ctx;
	const char *secret;        /* [plugin <name>] secret: its routes need it */
	struct netaddr_list allow_from;   /* empty: any peer with the secret */
};

struct plugin_host {
	struct app *app;
	struct loaded_plugin *plugins;
	size_t n;
};

/* ---- the host function table ------------------------------------------ */

static void
host_log(struct mb_ctx *ctx, int level, const char *msg)
{
	log_msg(level <= 3 ? LOG_LVL_ERROR : level == 4 ? LOG_LVL_WARN : level <= 6 ? LOG_LVL_INFO : LOG_LVL_DEBUG,
	    "plugin %s: %s", ctx->plugin->name, msg);
}

static const char *
host_config(struct mb_ctx *ctx, const char *key)
{
	return config_plugin_value(ctx->app->cfg, ctx->plugin->name, key);
}

static const char *
host_public_url(struct mb_ctx *ctx)
{
	return ctx->app->cfg->public_url;
}

static const struct location_config *
host_location(struct mb_ctx *ctx, const char *location_id, char **error_r)
{
	const struct location_config *loc = location_id ? config_location(ctx->app->cfg, location_id) : NULL;
	if (!loc)
		*error_r = xasprintf("location %s is not configured", location_id ? location_id : "(none)");
	return loc;
}

/* The location, when it uses this plugin for type (a plugin acts only
 * for the locations that chose it); else NULL with *error_r. */
static const struct location_config *
host_own_location(struct mb_ctx *ctx, const char *location_id, unsigned type, char **error_r)
{
	const struct location_config *loc = host_location(ctx, location_id, error_r);
	const char *uses = !loc ? NULL : type == MB_TYPE_SMS ? loc->sms_plugin : loc->call_plugin;

	if (loc && (!uses || strcmp(uses, ctx->plugin->name))) {
		*error_r = xasprintf("location %s does not use plugin %s for %s", location_id, ctx->plugin->name,
		    type == MB_TYPE_SMS ? "SMS" : "calls");
		log_warn("plugin %s: refused: %s", ctx->plugin->name, *error_r);
		return NULL;
	}
	return loc;
}

/* "+15550001111" from what gateways send: spaces, dashes, dots and
 * parentheses dropped, "00" prefix or a bare international number
 * gets its "+". NULL when what remains is not 8-15 digits. */
static char *
e164_normalise(const char *in)
{
	char digits[32];
	size_t n = 0;
	bool plus = false;

	if (!in)
		return NULL;
	for (const char *p = in; *p; p++) {
		if (*p == '+' && n == 0 && !plus)
			plus = true;
		else if (*p >= '0' && *p <= '9') {
			if (n + 1 >= sizeof(digits))
				return NULL;
			digits[n++] = *p;
		} else if (!strchr(" -.()", *p))
			return NULL;
	}
	digits[n] = '\0';
	if (!plus && n > 2 && digits[0] == '0' && digits[1] == '0')
		memmove(digits, digits + 2, (n -= 2) + 1);
	if (n < 8 || n > 15)
		return NULL;
	return xasprintf("+%s", digits);
}

static int
host_contact_by_phone(struct mb_ctx *ctx, const char *location_id, const char *phone, int create,
    char **contact_id_r, char **error_r)
{
	const struct location_config *loc = host_location(ctx, location_id, error_r);
	struct ghl_step s = { .cls = GHL_OK };
	char *e164;

	*contact_id_r = NULL;
	if (!loc)
		return 0;
	if (!(e164 = e164_normalise(phone))) {
		*error_r = xasprintf("not a phone number: %s", phone ? phone : "(none)");
		return 0;
	}
	*contact_id_r = contact_find(ctx->app, loc, NULL, e164, NULL, create != 0, &s);
	free(e164);
	if (*contact_id_r)
		return 1;
	*error_r = xstrdup(s.error ? s.error : "contact lookup failed");
	free(s.error);
	return s.cls == GHL_PERMANENT ? 0 : -1;
}

static int
host_upload(struct mb_ctx *ctx, const char *location_id, const char *contact_id, const char *filename,
    const char *content_type, const void *data, size_t len, char **url_r, char **error_r)
{
	const struct location_config *loc = host_location(ctx, location_id, error_r);
	struct ghl_step s = { .cls = GHL_OK };
	struct ghl_file a = { filename, content_type, data, len };
	struct ghl_result res = { 0 };
	char *conv;
	int ret;

	*url_r = NULL;
	if (!loc)
		return 0;
	if (!(conv = contact_conversation_find(ctx->app, loc, contact_id, &s))) {
		*error_r = xstrdup(s.error ? s.error : "no conversation");
		free(s.error);
		return s.cls == GHL_PERMANENT ? 0 : -1;
	}
	ghl_upload(ctx->app->ghl, loc->id, conv, contact_id, &a, 1, &res);
	free(conv);
	if (res.cls == GHL_OK) {
		size_t n;
		char **urls = ghl_uploaded_urls(&res, &n);
		for (size_t i = 0; i < n; i++) {
			if (!*url_r)
				*url_r = urls[i];
			else
				free(urls[i]);
		}
		free(urls);
	}
	if (*url_r) {
		ret = 1;
	} else {
		*error_r = xasprintf("upload: %s (HTTP %ld)", res.error ? res.error : "no URL returned", res.status);
		ret = res.cls == GHL_OK || res.cls == GHL_PERMANENT ? 0 : -1;
	}
	ghl_result_clear(&res);
	return ret;
}

static int
host_post_inbound_sms(struct mb_ctx *ctx, const char *location_id, const char *from_phone, const char *text,
    char **error_r)
{
	struct app *app = ctx->app;
	const struct location_config *loc = host_own_location(ctx, location_id, MB_TYPE_SMS, error_r);
	struct ghl_step s = { .cls = GHL_OK };
	struct ghl_result res = { 0 };
	char *contact = NULL, *conv = NULL, *e164 = e164_normalise(from_phone);
	struct ghl_posted posted = { 0 };
	int ret = -1, r;

	if (!loc) {
		free(e164);
		return 0;
	}
	if (!e164) {
		*error_r = xasprintf("not a phone number: %s", from_phone ? from_phone : "(none)");
		return 0;
	}
	r = contact_conversation(app, loc, NULL, e164, NULL, true, &contact, &conv, &s);
	free(e164);
	if (!r) {
		*error_r = xstrdup(s.error ? s.error : "contact lookup failed");
		ret = s.cls == GHL_PERMANENT ? 0 : -1;
		goto out;
	}
	{
		/* default SMS provider: no id; an extra SMS channel needs its id */
		struct ghl_message msg = { .type = GHL_MSG_SMS, .contact_id = contact, .conversation_id = conv,
			.provider_id = loc->sms_provider_id, .message = text };
		if (ghl_message_post(app->ghl, loc->id, &msg, &posted, &res) == GHL_OK) {
			ret = 1;
		} else {
			*error_r = xasprintf("post inbound: %s (HTTP %ld)", res.error ? res.error : "?", res.status);
			ret = res.cls == GHL_PERMANENT ? 0 : -1;
		}
	}
out:
	ghl_result_clear(&res);
	ghl_posted_clear(&posted);
	free(contact);
	free(conv);
	free(s.error);
	return ret;
}

static int
host_log_call(struct mb_ctx *ctx, const char *location_id, int inbound, const char *from, const char *to,
    const char *status, const char *recording_url, char **error_r)
{
	const struct location_config *loc = host_own_location(ctx, location_id, MB_TYPE_CALL, error_r);
	struct call_record c = { inbound != 0, from, to, status, recording_url, 0 };
	char *mid = NULL;
	int r;

	if (!loc)
		return 0;
	r = calllog_post(ctx->app, loc, &c, &mid, error_r);
	free(mid);
	return r;
}

/* Only a job this plugin could have sent: an SMS job at a location whose
 * SMS plugin it is. Anything else (an email, another plugin's message)
 * is "no such message" to it. */
static int
host_update_status(struct mb_ctx *ctx, const char *message_id, const char *status, const char *error_text)
{
	struct job *job = NULL;
	const struct location_config *loc;
	int st = job_report_status_parse(status);
	bool own;
	int r;

	if (st <= STATUS_NONE)
		return 0;
	if (!message_id || store_job_get(ctx->app->store, message_id, &job) != 1)
		return 0;
	loc = config_location(ctx->app->cfg, job->location_id);
	own = (ctx->plugin->api->types & MB_TYPE_SMS) && job->type && strcmp(job->type, "Email") &&
	    loc && loc->sms_plugin && !strcmp(loc->sms_plugin, ctx->plugin->name);
	if (!own)
		log_warn("plugin %s: refused a status for messageId=%s: not one of its messages", ctx->plugin->name,
		    message_id);
	store_job_free(job);
	if (!own)
		return 0;
	r = jobs_dsn(ctx->app->store, message_id, (enum report_status)st, 0, st == STATUS_FAILED ? error_text : NULL,
	    error_text ? error_text : status, NULL, NULL, 0, NULL);
	if (r < 0)
		log_error("plugin %s: status %s for messageId=%s not recorded (store error)", ctx->plugin->name, status,
		    message_id);
	return r == 1 ? 1 : r < 0 ? -1 : 0;
}

static int
host_kv_put(struct mb_ctx *ctx, const char *key, const char *value)
{
	return store_kv_put(ctx->app->store, ctx->plugin->name, key, value);
}

static char *
host_kv_get(struct mb_ctx *ctx, const char *key)
{
	char *v = NULL;
	store_kv_get(ctx->app->store, ctx->plugin->name, key, &v);
	return v;
}

static const struct mb_host host_table = {
	.abi = MB_PLUGIN_ABI,
	.log = host_log,
	.config = host_config,
	.public_url = host_public_url,
	.post_inbound_sms = host_post_inbound_sms,
	.log_call = host_log_call,
	.update_status = host_update_status,
	.kv_put = host_kv_put,
	.kv_get = host_kv_get,
	.contact_by_phone = host_contact_by_phone,
	.upload = host_upload,
};

/* ---- loading -------------------------------------------------------------- */

static int
plugin_load_one(struct plugin_host *h, const char *name, char **error_r)
{
	struct loaded_plugin *p;
	char *path;
	void *dl;
	const struct mb_plugin *api;

	for (size_t i = 0; i < h->n; i++)
		if (!strcmp(h->plugins[i].name, name))
			return 0;
	path = xasprintf("%s/%s.so", h->app->cfg->plugin_dir, name);
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!dl) {
		*error_r = xasprintf("plugin %s: %s", name, dlerror());
		free(path);
		return -1;
	}
	api = dlsym(dl, "mailbridge_plugin");
	if (!api || api->abi != MB_PLUGIN_ABI) {
		*error_r = api ? xasprintf("plugin %s (%s) speaks ABI %d, this mailbridge speaks %d: rebuild it against "
		    "this plugin.h", name, path, api->abi, MB_PLUGIN_ABI) :
		    xasprintf("plugin %s (%s) exports no mailbridge_plugin", name, path);
		dlclose(dl);
		free(path);
		return -1;
	}
	free(path);
	if (!api->name || strcmp(api->name, name) || !api->init || !api->send) {
		*error_r = xasprintf("plugin %s: descriptor name or functions missing", name);
		dlclose(dl);
		return -1;
	}
	h->plugins = xrealloc(h->plugins, (h->n + 1) * sizeof(*p));
	p = &h->plugins[h->n];
	memset(p, 0, sizeof(*p));
	p->name = xstrdup(name);
	p->dl = dl;
	p->api = api;
	p->ctx.app = h->app;
	h->n++;
	return 0;
}

struct plugin_host *
plugin_host_check(struct app *app, char **error_r)
{
	struct plugin_host *h = xcalloc(1, sizeof(*h));
	const struct config *cfg = app->cfg;

	h->app = app;
	for (size_t i = 0; i < cfg->n_locations; i++) {
		const char *names[2] = { cfg->locations[i].sms_plugin, cfg->locations[i].call_plugin };
		for (int k = 0; k < 2; k++)
			if (names[k] && plugin_load_one(h, names[k], error_r) < 0) {
				plugin_host_free(h);
				return NULL;
			}
	}
	/* ctx pointers are stable only once the array stops growing */
	for (size_t i = 0; i < h->n; i++) {
		struct loaded_plugin *p = &h->plugins[i];
		char *err = NULL;
		p->ctx.plugin = p;
		p->secret = config_plugin_value(cfg, p->name, "secret");
		if (p->secret && !p->secret[0])
			p->secret = NULL;
		if (netaddr_list_parse(config_plugin_value(cfg, p->name, "allow_from"), &p->allow_from, &err) < 0) {
			*error_r = xasprintf("plugin %s: allow_from: %s", p->name, err);
			free(err);
			plugin_host_free(h);
			return NULL;
		}
	}
	return h;
}

struct plugin_host *
plugin_host_load(struct app *app, char **error_r)
{
	struct plugin_host *h = plugin_host_check(app, error_r);

	for (size_t i = 0; h && i < h->n; i++) {
		struct loaded_plugin *p = &h->plugins[i];
		char *err = NULL;
		if (p->api->http && !p->secret)
			log_warn("plugin: %s has HTTP routes but no [plugin %s] secret: they answer 403", p->name, p->name);
		p->state = p->api->init(&host_table, &p->ctx, &err);
		if (!p->state) {
			*error_r = xasprintf("plugin %s: init failed: %s", p->name, err ? err : "?");
			free(err);
			plugin_host_free(h);
			return NULL;
		}
		log_info("plugin: loaded %s (types%s%s)", p->name, p->api->types & MB_TYPE_SMS ? " SMS" : "",
		    p->api->types & MB_TYPE_CALL ? " Call" : "");
	}
	return h;
}

void
plugin_host_free(struct plugin_host *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++) {
		if (h->plugins[i].state && h->plugins[i].api->deinit)
			h->plugins[i].api->deinit(h->plugins[i].state);
		dlclose(h->plugins[i].dl);
		netaddr_list_clear(&h->plugins[i].allow_from);
		free(h->plugins[i].name);
	}
	free(h->plugins);
	free(h);
}

struct loaded_plugin *
plugin_host_for(struct plugin_host *h, const struct location_config *loc, unsigned type)
{
	const char *name = type == MB_TYPE_SMS ? loc->sms_plugin : loc->call_plugin;
	if (!h || !name)
		return NULL;
	for (size_t i = 0; i < h->n; i++)
		if (!strcmp(h->plugins[i].name, name) && (h->plugins[i].api->types & type))
			return &h->plugins[i];
	return NULL;
}

/* ---- send with a timeout ---------------------------------------------------- */

struct send_call {
	pthread_mutex_t lock;
	pthread_cond_t done_cond;
	bool done, abandoned;
	struct loaded_plugin *p;
	struct mb_outbound job;    /* strings owned by this call */
	char *owned[5];
	char **attachments;        /* owned copies of job.attachments */
	enum mb_send_result result;
	char *reason;
};

static void
send_call_free(struct send_call *c)
{
	for (int i = 0; i < 5; i++)
		free(c->owned[i]);
	for (size_t i = 0; i < c->job.n_attachments; i++)
		free(c->attachments[i]);
	free(c->attachments);
	free(c->reason);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->done_cond);
	free(c);
}

static void *
send_thread(void *arg)
{
	struct send_call *c = arg;
	char *reason = NULL;
	enum mb_send_result r;
	bool abandoned;

	thread_name("plugin-send");
	r = c->p->api->send(c->p->state, &c->job, &reason);

	pthread_mutex_lock(&c->lock);
	c->result = r;
	c->reason = reason;
	c->done = true;
	abandoned = c->abandoned;
	pthread_cond_signal(&c->done_cond);
	pthread_mutex_unlock(&c->lock);
	if (abandoned)
		send_call_free(c);   /* the caller gave up on us: clean up alone */
	return NULL;
}

enum mb_send_result
plugin_send(struct plugin_host *h, struct loaded_plugin *p, const struct mb_outbound *job, char **reason_r)
{
	struct send_call *c = xcalloc(1, sizeof(*c));
	struct timespec ts;
	pthread_t t;
	enum mb_send_result r;
	bool free_here;

	pthread_mutex_init(&c->lock, NULL);
	pthread_cond_init(&c->done_cond, NULL);
	c->p = p;
	c->job = *job;
	/* the job outlives us if the plugin hangs: copy what it points at */
	c->job.location_id = c->owned[0] = xstrdup(job->location_id);
	c->job.message_id = c->owned[1] = xstrdup(job->message_id);
	c->job.contact_id = c->owned[2] = xstrdup(job->contact_id);
	c->job.phone = c->owned[3] = xstrdup(job->phone);
	c->job.message = c->owned[4] = xstrdup(job->message);
	c->attachments = xcalloc(job->n_attachments + 1, sizeof(char *));
	for (size_t i = 0; i < job->n_attachments; i++)
		c->attachments[i] = xstrdup(job->attachments[i]);
	c->job.attachments = (const char *const *)c->attachments;
	c->job.n_attachments = job->n_attachments;
	if (pthread_create(&t, NULL, send_thread, c) != 0) {
		send_call_free(c);
		*reason_r = xstrdup("cannot start a plugin thread");
		return MB_SEND_TEMPORARY;
	}
	pthread_detach(t);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += h->app->cfg->plugin_timeout;
	pthread_mutex_lock(&c->lock);
	while (!c->done)
		if (pthread_cond_timedwait(&c->done_cond, &c->lock, &ts) == ETIMEDOUT)
			break;
	if (c->done) {
		r = c->result;
		*reason_r = c->reason;
		c->reason = NULL;
		free_here = true;
	} else {
		c->abandoned = true;
		r = MB_SEND_TEMPORARY;
		*reason_r = xasprintf("plugin %s did not answer within %ld s", p->name, h->app->cfg->plugin_timeout);
		free_here = false;
	}
	pthread_mutex_unlock(&c->lock);
	if (free_here)
		send_call_free(c);
	return r;
}

/* ---- HTTP ------------------------------------------------------------------- */

static const char *
req_query(const struct mb_http_request *r, const char *name)
{
	return http_query(r->priv, name);
}

static const char *
req_header(const struct mb_http_request *r, const char *name)
{
	return http_header(r->priv, name);
}

/* The host's gate in front of every plugin route: the plugin's secret,
 * compared in constant time, and its allow_from. The secret may come in
 * the query (gateways that can only call a URL), a header, or a bearer
 * token. */
static bool
plugin_http_allowed(const struct loaded_plugin *p, const struct http_request *req, const struct sockaddr *peer,
    const char *peer_addr, struct http_response *resp)
{
	const char *given = http_query(req, "secret"), *auth = http_header(req, "Authorization");

	if (!given)
		given = http_header(req, "X-Mailbridge-Secret");
	if (!given && auth && !strncasecmp(auth, "Bearer ", 7))
		given = auth + 7;
	if (!p->secret) {
		http_json_error(resp, 403, "this plugin's routes are off: set its secret", NULL);
		return false;
	}
	if (p->allow_from.n > 0 && (!peer || !netaddr_list_has_addr(&p->allow_from, peer))) {
		log_warn("plugin %s: refused %s %s from %s: not in allow_from", p->name, req->method, req->path, peer_addr);
		http_json_error(resp, 403, "forbidden", NULL);
		return false;
	}
	if (!secret_equal(given, p->secret)) {
		log_warn("plugin %s: refused %s %s from %s: %s secret", p->name, req->method, req->path, peer_addr,
		    given ? "wrong" : "no");
		http_json_error(resp, 401, "plugin secret required", NULL);
		return false;
	}
	return true;
}

void
plugin_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	const char *rest = req->path + strlen("/plugins/");
	const char *slash = strchr(rest, '/');
	size_t len = slash ? (size_t)(slash - rest) : strlen(rest);

	for (size_t i = 0; app->plugins && i < app->plugins->n; i++) {
		struct loaded_plugin *p = &app->plugins->plugins[i];
		if (strlen(p->name) == len && !strncmp(p->name, rest, len) && p->api->http) {
			char peer_addr[64];
			const struct sockaddr *peer = http_peer(req, peer_addr, sizeof(peer_addr));
			struct mb_http_request pr = { req->method, slash ? slash : "/", req->body, req->body_len,
				req_query, (void *)req, req_header, peer, peer_addr };
			struct mb_http_response pres = { 404, "application/json", NULL };
			if (!plugin_http_allowed(p, req, peer, peer_addr, resp))
				return;
			p->api->http(p->state, &pr, &pres);
			resp->status = pres.status;
			resp->content_type = pres.content_type ? pres.content_type : "application/json";
			resp->body = pres.body;
			return;
		}
	}
	http_json_error(resp, 404, "no such plugin route", NULL);
}
