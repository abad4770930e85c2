#include "unsubscribe.h"
#include "app.h"
#include "config.h"
#include "engage.h"
#include "engagement.h"
#include "ghl.h"
#include "log.h"
#include "poller.h"
#include "store_threads.h"
#include "store_unsub.h"
#include "thread.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UNSUB_TOKEN_LEN   32        /* the reply token's 16 hex, then the HMAC's 16 */
#define UNSUB_LEASE_MS    (60 * 1000)
#define UNSUB_RETRY_BASE  5000
#define UNSUB_RETRY_MAX   (30 * 60 * 1000)
#define UNSUB_IDLE_MS     1000
#define UNSUB_MAX_TRIES   50

/* The token's second half: 16 hex of HMAC(location/contact/messageId). */
static void
unsub_sig(const unsigned char key[32], const char *location_id, const char *contact_id, const char *message_id,
    char out[17])
{
	unsigned char d[32];
	char *in = xasprintf("unsubscribe/%s/%s/%s", location_id, contact_id, message_id);
	gnutls_hmac_fast(GNUTLS_MAC_SHA256, key, 32, in, strlen(in), d);
	hex_encode(d, 8, out);
	free(in);
}

char *
unsubscribe_header(const struct app *app, const struct location_config *loc, const char *reply_token,
    const char *contact_id, const char *message_id)
{
	char sig[17];
	const char *base = app->cfg->public_url;
	size_t bl = strlen(base);

	if (!loc->unsubscribe || !contact_id || !*contact_id || !reply_token)
		return NULL;
	unsub_sig(app->address_key, loc->id, contact_id, message_id, sig);
	return xasprintf("<%.*s/u/%s/%s%s>, <mailto:%s+u%s%s@%s>", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base,
	    loc->id, reply_token, sig, loc->reply_box.local, reply_token, sig, loc->reply_box.domain);
}

/* The message a token names, when its HMAC holds: 1 with *m, else 0. */
static int
token_check(struct app *app, const struct location_config *loc, const char *token, struct msgmap **m)
{
	char reply_token[17], sig[17];

	*m = NULL;
	if (strlen(token) != UNSUB_TOKEN_LEN || strspn(token, "0123456789abcdefABCDEF") != UNSUB_TOKEN_LEN)
		return 0;
	snprintf(reply_token, sizeof(reply_token), "%.16s", token);
	for (char *c = reply_token; *c; c++)
		*c = (char)(*c >= 'A' && *c <= 'F' ? *c + 32 : *c);
	if (store_msgmap_get(app->store, MSGMAP_BY_TOKEN, loc->id, reply_token, m) != 1 || !(*m)->contact_id) {
		store_msgmap_free(*m);
		*m = NULL;
		return 0;
	}
	unsub_sig(app->address_key, loc->id, (*m)->contact_id, (*m)->ghl_message_id, sig);
	if (!secret_equal(token + 16, sig)) {
		store_msgmap_free(*m);
		*m = NULL;
		return 0;
	}
	return 1;
}

static void
page(struct http_response *resp, int status, const char *title, const char *body_html)
{
	resp->status = status;
	resp->content_type = "text/html; charset=utf-8";
	resp->body = xasprintf("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	    "<meta name=\"robots\" content=\"noindex\"><title>%s</title><style>body{font:16px/1.5 system-ui,"
	    "sans-serif;max-width:34em;margin:3em auto;padding:0 1em;color:#222}button{font-size:1em;padding:.5em 1.2em}"
	    "</style></head>\n<body><h1>%s</h1>\n%s\n</body></html>\n", title, title, body_html);
}

void
unsubscribe_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	const char *rest = req->path + 3;               /* past "/u/" */
	const char *slash = strchr(rest, '/');
	char *loc_id = slash ? xasprintf("%.*s", (int)(slash - rest), rest) : NULL;
	const struct location_config *loc = loc_id ? config_location(app->cfg, loc_id) : NULL;
	struct msgmap *m = NULL;
	bool post = !strcmp(req->method, "POST");

	if (!loc || !loc->unsubscribe || token_check(app, loc, slash + 1, &m) != 1) {
		/* nothing said about why: a forged or stale link learns nothing */
		page(resp, 404, "Link not valid", "<p>This unsubscribe link is not valid, or has expired.</p>");
	} else if (!post) {
		/* a GET changes nothing: mail scanners follow links */
		page(resp, 200, "Unsubscribe", "<p>Stop receiving these emails?</p>\n<form method=\"post\">"
		    "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
		    "<button type=\"submit\">Unsubscribe</button></form>");
	} else if (!strstr(req->body, "List-Unsubscribe=One-Click")) {
		page(resp, 400, "Unsubscribe", "<p>The request did not say List-Unsubscribe=One-Click.</p>");
	} else if (store_unsub_add(app->store, loc->id, m->contact_id, m->ghl_message_id,
	    http_header(req, "Referer") ? "page" : "one-click", engage_name(ENG_UNSUBSCRIBED), NULL) < 0) {
		page(resp, 503, "Try again", "<p>The request could not be recorded; please try again.</p>");
	} else {
		log_info("unsubscribe: locationId=%s contactId=%s messageId=%s requested", loc->id, m->contact_id,
		    m->ghl_message_id);
		unsubscribe_wake(app->unsubscriber);
		engagement_wake(app->engagement);
		page(resp, 200, "Unsubscribed", "<p>You will not receive these emails any more.</p>");
	}
	store_msgmap_free(m);
	free(loc_id);
}

int
unsubscribe_by_mail(struct app *app, const struct location_config *loc, char *const *rcpts, size_t n_rcpts)
{
	if (!loc->unsubscribe)
		return 0;
	for (size_t i = 0; i < n_rcpts; i++) {
		/* <reply local>+u<token>@<reply domain> */
		char *token = thread_token_of(loc, false, "u", rcpts[i]);
		struct msgmap *m = NULL;
		int r = token && token_check(app, loc, token, &m) == 1;
		free(token);
		if (r) {
			r = store_unsub_add(app->store, loc->id, m->contact_id, m->ghl_message_id, "mailto",
			    engage_name(ENG_UNSUBSCRIBED), NULL) < 0 ? -1 : 1;
			if (r == 1) {
				log_info("unsubscribe: locationId=%s contactId=%s messageId=%s requested by mail", loc->id,
				    m->contact_id, m->ghl_message_id);
				unsubscribe_wake(app->unsubscriber);
				engagement_wake(app->engagement);
			}
			store_msgmap_free(m);
			return r;
		}
	}
	return 0;
}

struct unsubscriber {
	struct app *app;
	struct poller *poller;
};

static void
unsub_one(struct unsubscriber *w, struct unsub *u)
{
	struct ghl_result res = { 0 };
	bool skip = false;

	if (u->if_email) {
		/* a hard bounce: only when the bounced address is the contact's */
		char *email = NULL;
		if (ghl_contact_email(w->app->ghl, u->location_id, u->contact_id, &email, &res) == GHL_OK &&
		    (skip = !email || strcasecmp(email, u->if_email) != 0)) {
			log_info("unsubscribe: locationId=%s contactId=%s hard bounce of %s, which is not the contact's email: "
			    "no DND", u->location_id, u->contact_id, u->if_email);
			if (store_unsub_done(w->app->store, u->id, "the bounced address is not the contact's email") < 0)
				log_error("unsubscribe: locationId=%s contactId=%s not recorded (store error)", u->location_id,
				    u->contact_id);
		}
		free(email);
		if (res.cls == GHL_OK)
			ghl_result_clear(&res);
	}
	if (skip)
		return;
	if (res.cls == GHL_OK && !res.throttled)
		ghl_contact_email_dnd(w->app->ghl, u->location_id, u->contact_id, u->if_email ?
		    "Hard bounce: the address does not exist" : "Unsubscribed from email (List-Unsubscribe)", &res);
	if (res.throttled || res.cls == GHL_RETRY || res.cls == GHL_AUTH) {
		int64_t d = res.throttled ? res.retry_after_ms : backoff_ms(u->attempts - 1, UNSUB_RETRY_BASE, UNSUB_RETRY_MAX);
		if (u->attempts >= UNSUB_MAX_TRIES && !res.throttled) {
			log_error("unsubscribe: locationId=%s contactId=%s gave up after %d attempts: %s", u->location_id,
			    u->contact_id, u->attempts, res.error ? res.error : "?");
			(void)store_unsub_done(w->app->store, u->id, res.error ? res.error : "gave up");
		} else if (store_unsub_later(w->app->store, u->id, now_ms() + d, res.error, !res.throttled) < 0) {
			log_error("unsubscribe: locationId=%s contactId=%s cannot be put back (store error): tried again when "
			    "its lease ends", u->location_id, u->contact_id);
		}
	} else if (res.cls == GHL_OK) {
		log_info("unsubscribe: locationId=%s contactId=%s Email DND set", u->location_id, u->contact_id);
		if (store_unsub_done(w->app->store, u->id, NULL) < 0)
			log_error("unsubscribe: locationId=%s contactId=%s done but not recorded (store error): set again "
			    "when its lease ends", u->location_id, u->contact_id);
	} else {
		log_error("unsubscribe: locationId=%s contactId=%s refused by HighLevel (HTTP %ld): %s", u->location_id,
		    u->contact_id, res.status, res.error ? res.error : "?");
		(void)store_unsub_done(w->app->store, u->id, res.error ? res.error : "refused");
	}
	ghl_result_clear(&res);
}

/* The worker's step: one due request. */
static int64_t
unsub_step(void *arg, void **slot)
{
	struct unsubscriber *w = arg;
	struct unsub *u = NULL;

	(void)slot;
	if (store_unsub_claim(w->app->store, now_ms(), UNSUB_LEASE_MS, &u) == 1) {
		unsub_one(w, u);
		store_unsub_free(u);
		return 0;
	}
	return poller_until(store_unsub_next_due(w->app->store), UNSUB_IDLE_MS);
}

struct unsubscriber *
unsubscribe_start(struct app *app)
{
	struct unsubscriber *w = xcalloc(1, sizeof(*w));
	struct poller_params pp = { .name = "unsubscribe", .threads = 1, .max_wait_ms = UNSUB_IDLE_MS,
		.step = unsub_step, .ctx = w };

	w->app = app;
	if (!(w->poller = poller_start(&pp))) {
		log_error("unsubscribe: cannot start the worker; requests wait in the store for the next start");
		free(w);
		return NULL;
	}
	return w;
}

void
unsubscribe_wake(struct unsubscriber *w)
{
	if (w)
		poller_wake(w->poller);
}

void
unsubscribe_stop(struct unsubscriber *w)
{
	if (!w)
		return;
	poller_stop(w->poller);
	free(w);
}
