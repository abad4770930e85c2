/* tracking: see tracking.h. */
#include "tracking.h"
#include "app.h"
#include "config.h"
#include "engage.h"
#include "engagement.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "store_engage.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TRACK_MAC_LEN     16          /* bytes of HMAC-SHA256 kept */
#define TRACK_QUEUE_MAX   8192        /* hits waiting for the store; past it they are dropped */
#define TRACK_FLUSH_MS    200
#define TRACK_MAX_TOKEN   8192

/* base64url without padding (RFC 4648 section 5), through GnuTLS's base64 */
static char *
b64url_encode(const void *in, size_t n)
{
	gnutls_datum_t d = { (unsigned char *)in, (unsigned)n }, out = { NULL, 0 };
	char *s;
	size_t len;

	if (gnutls_base64_encode2(&d, &out) < 0)
		return NULL;
	s = xmalloc(out.size + 1);
	memcpy(s, out.data, out.size);
	s[out.size] = '\0';
	gnutls_free(out.data);
	for (char *p = s; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	len = strlen(s);
	while (len > 0 && s[len - 1] == '=')
		s[--len] = '\0';
	return s;
}

static unsigned char *
b64url_decode(const char *in, size_t n, size_t *len_r)
{
	char *s = xmalloc(n + 4);
	gnutls_datum_t d, out = { NULL, 0 };
	unsigned char *r = NULL;
	size_t m = 0;

	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		if (c == '+' || c == '/' || c == '=')
			goto out;            /* only the URL alphabet */
		s[m++] = c == '-' ? '+' : c == '_' ? '/' : c;
	}
	while (m % 4)
		s[m++] = '=';
	d.data = (unsigned char *)s;
	d.size = (unsigned)m;
	if (gnutls_base64_decode2(&d, &out) < 0)
		goto out;
	r = xmalloc(out.size + 1);
	memcpy(r, out.data, out.size);
	r[out.size] = '\0';
	*len_r = out.size;
	gnutls_free(out.data);
out:
	free(s);
	return r;
}

static void
track_mac(const unsigned char key[32], const char *payload, size_t n, unsigned char mac[TRACK_MAC_LEN])
{
	unsigned char d[32];
	gnutls_hmac_hd_t h;

	/* "track\n" keeps these MACs apart from the address tokens' */
	if (gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, key, 32) < 0) {
		memset(mac, 0, TRACK_MAC_LEN);
		return;
	}
	gnutls_hmac(h, "track\n", 6);
	gnutls_hmac(h, payload, n);
	gnutls_hmac_deinit(h, d);
	memcpy(mac, d, TRACK_MAC_LEN);
}

/* <public_url>/<kind>/<b64(payload)>.<b64(mac)><suffix> */
static char *
track_url(const struct app *app, char kind, const char *payload, const char *suffix)
{
	unsigned char mac[TRACK_MAC_LEN];
	const char *base = app->cfg->public_url;
	size_t bl = strlen(base);
	char *p64 = b64url_encode(payload, strlen(payload)), *m64, *url;

	track_mac(app->address_key, payload, strlen(payload), mac);
	m64 = b64url_encode(mac, sizeof(mac));
	url = p64 && m64 ? xasprintf("%.*s/%c/%s.%s%s", (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, kind, p64,
	    m64, suffix) : NULL;
	free(p64);
	free(m64);
	return url;
}

/* What a token names, its MAC checked; strings point into buf. */
struct track_hit {
	char kind;                 /* 'o' or 'c' */
	const char *location_id, *message_id, *url;
	int64_t sent_s;
	long index;
};

static bool
field_ok(const char *s)
{
	return s && !strchr(s, '\n');
}

/* The payload's fields, split on '\n' in place: 1 parsed, 0 not ours. */
static int
track_parse(char *buf, char kind, struct track_hit *h)
{
	char *f[6];
	size_t n = 0, want = kind == 'c' ? 6 : 4;
	char *p = buf, *end;

	while (n < want) {
		f[n++] = p;
		if (n == want)
			break;
		if (!(p = strchr(p, '\n')))
			return 0;
		*p++ = '\0';
	}
	if (kind == 'o' && strchr(f[3], '\n'))
		return 0;
	if (strlen(f[0]) != 1 || f[0][0] != kind || !*f[1] || !*f[2])
		return 0;
	h->kind = kind;
	h->location_id = f[1];
	h->message_id = f[2];
	h->sent_s = strtoll(f[3], &end, 10);
	if (kind == 'c') {
		if (*end)
			return 0;
		h->index = strtol(f[4], &end, 10);
		if (*end || (strncmp(f[5], "http://", 7) && strncmp(f[5], "https://", 8)))
			return 0;
		h->url = f[5];
	} else if (*end) {
		return 0;
	}
	return 1;
}

/* The token in path (after /o/ or /c/, before .gif for an open): its
 * payload (malloc'd, parsed into h) when the MAC holds, else NULL. */
static char *
track_check(const struct app *app, const char *tok, size_t n, char kind, struct track_hit *h)
{
	const char *dot = memchr(tok, '.', n);
	unsigned char want[TRACK_MAC_LEN], *mac = NULL, *payload = NULL;
	size_t plen = 0, mlen = 0;

	if (!dot || n > TRACK_MAX_TOKEN)
		return NULL;
	payload = b64url_decode(tok, (size_t)(dot - tok), &plen);
	mac = b64url_decode(dot + 1, n - (size_t)(dot + 1 - tok), &mlen);
	if (!payload || !mac || mlen != TRACK_MAC_LEN || memchr(payload, '\0', plen))
		goto bad;
	track_mac(app->address_key, (const char *)payload, plen, want);
	if (gnutls_memcmp(want, mac, TRACK_MAC_LEN) != 0 || track_parse((char *)payload, kind, h) != 1)
		goto bad;
	free(mac);
	return (char *)payload;
bad:
	free(payload);
	free(mac);
	return NULL;
}

/* href="..." of each <a> tag: where the value starts and ends in html. */
static const char *
next_href(const char *p, const char **v_r, const char **end_r)
{
	while ((p = strchr(p, '<')) != NULL) {
		const char *tag_end;
		p++;
		if ((*p != 'a' && *p != 'A') || !strchr(" \t\r\n", p[1]))
			continue;
		tag_end = strchr(p, '>');
		if (!tag_end)
			return NULL;
		for (const char *q = p + 1; q < tag_end; q++) {
			char quote;
			if (strncasecmp(q, "href", 4) || !strchr(" \t\r\n", q[-1]))
				continue;
			q += 4;
			while (q < tag_end && strchr(" \t\r\n", *q))
				q++;
			if (*q != '=')
				continue;
			q++;
			while (q < tag_end && strchr(" \t\r\n", *q))
				q++;
			quote = *q == '"' || *q == '\'' ? *q++ : 0;
			*v_r = q;
			while (q < tag_end && (quote ? *q != quote : !strchr(" \t\r\n", *q)))
				q++;
			*end_r = q;
			return tag_end;
		}
		p = tag_end;
	}
	return NULL;
}

/* An href's value as a URL: the HTML character references that links
 * carry (&amp; and its numeric forms) decoded. */
static char *
href_url(const char *v, size_t n)
{
	char *u = xmalloc(n + 1), *o = u;
	static const char *const amp[] = { "&amp;", "&#38;", "&#x26;", "&#X26;" };

	for (size_t i = 0; i < n;) {
		size_t k;
		for (k = 0; k < sizeof(amp) / sizeof(amp[0]); k++)
			if (!strncasecmp(v + i, amp[k], strlen(amp[k])) && i + strlen(amp[k]) <= n)
				break;
		if (k < sizeof(amp) / sizeof(amp[0])) {
			*o++ = '&';
			i += strlen(amp[k]);
		} else {
			*o++ = v[i++];
		}
	}
	*o = '\0';
	return u;
}

/* Appends n bytes of s to the growing buffer *b (len *bl, capacity *bc). */
static void
grow(char **b, size_t *bl, size_t *bc, const char *s, size_t n)
{
	if (*bl + n + 1 > *bc) {
		*bc = (*bl + n + 1) * 2;
		*b = xrealloc(*b, *bc);
	}
	memcpy(*b + *bl, s, n);
	*bl += n;
	(*b)[*bl] = '\0';
}

static char *
rewrite_links(const struct app *app, const char *html, const char *prefix)
{
	const char *p = html, *v, *e, *tag_end;
	char *out = NULL;
	size_t ol = 0, oc = 0;
	long index = 0;

	while ((tag_end = next_href(p, &v, &e)) != NULL) {
		char *url = href_url(v, (size_t)(e - v)), *payload, *t;
		grow(&out, &ol, &oc, p, (size_t)(v - p));
		if ((strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)) || !field_ok(url) ||
		    strpbrk(url, "\"'<> \t\r\n")) {
			grow(&out, &ol, &oc, v, (size_t)(e - v));
		} else {
			payload = xasprintf("%s\n%ld\n%s", prefix, index++, url);
			t = track_url(app, 'c', payload, "");
			grow(&out, &ol, &oc, t ? t : url, strlen(t ? t : url));
			free(payload);
			free(t);
		}
		free(url);
		p = e;
	}
	if (!out)
		return NULL;
	grow(&out, &ol, &oc, p, strlen(p));
	return out;
}

static char *
add_pixel(const struct app *app, const char *html, const char *prefix)
{
	char *url = track_url(app, 'o', prefix, ".gif"), *img, *out;
	const char *body_end = NULL;

	if (!url)
		return NULL;
	img = xasprintf("<img src=\"%s\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;"
	    "width:1px;height:1px\">", url);
	for (const char *q = html; (q = strcasestr(q, "</body")) != NULL; q++)
		body_end = q;
	if (body_end)
		out = xasprintf("%.*s%s%s", (int)(body_end - html), html, img, body_end);
	else
		out = xasprintf("%s%s", html, img);
	free(img);
	free(url);
	return out;
}

char *
tracking_html(const struct app *app, const struct location_config *loc, const char *html, const char *message_id,
    int64_t sent_ms)
{
	char *prefix, *linked = NULL, *out;

	if (!html || !*html || (!loc->track_opens && !loc->track_clicks) || !field_ok(loc->id) ||
	    !field_ok(message_id))
		return NULL;
	/* the fields after the kind, common to both tokens */
	prefix = xasprintf("%s\n%s\n%lld", loc->id, message_id, (long long)(sent_ms / 1000));
	if (loc->track_clicks) {
		char *p = xasprintf("c\n%s", prefix);
		linked = rewrite_links(app, html, p);
		free(p);
	}
	if (loc->track_opens) {
		char *p = xasprintf("o\n%s", prefix);
		out = add_pixel(app, linked ? linked : html, p);
		free(p);
		free(linked);
	} else {
		out = linked;
	}
	free(prefix);
	return out;
}

bool
tracking_is_machine(const char *ua)
{
	/* lower-case substrings of scanners', link checkers' and HTTP
	 * libraries' user agents; readers' mail apps and the image proxies
	 * that fetch when a reader opens (GoogleImageProxy, YahooMailProxy)
	 * are not here */
	static const char *const machines[] = {
		"bot", "spider", "crawl", "slurp", "preview", "scan", "barracuda", "mimecast", "proofpoint",
		"ironport", "symantec", "messagelabs", "trendmicro", "fortinet", "fortiguard", "sophos", "forcepoint",
		"zscaler", "checkpoint", "cisco", "paloalto", "curl/", "wget", "python-", "python/", "go-http-client",
		"java/", "okhttp", "libwww", "httpclient", "axios", "node-fetch", "headless", "phantomjs", "lighthouse",
		"validator", "monitor",
	};
	char low[256];
	size_t n;

	if (!ua || !*ua)
		return true;
	n = strlen(ua) < sizeof(low) - 1 ? strlen(ua) : sizeof(low) - 1;
	for (size_t i = 0; i < n; i++)
		low[i] = (char)(ua[i] >= 'A' && ua[i] <= 'Z' ? ua[i] + 32 : ua[i]);
	low[n] = '\0';
	for (size_t i = 0; i < sizeof(machines) / sizeof(machines[0]); i++)
		if (strstr(low, machines[i]))
			return true;
	return false;
}

/* Hits waiting for the store. */
struct hit {
	char *location_id, *message_id;
	enum engage_kind kind;
};

struct tracker {
	struct app *app;
	struct poller *writer;
	pthread_mutex_t lock;
	struct hit *q;
	size_t n;
};

static void
hit_queue(struct app *app, const struct track_hit *h)
{
	struct tracker *t = app->tracker;
	bool queued = false;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	if (t->n < TRACK_QUEUE_MAX) {
		t->q[t->n++] = (struct hit){ xstrdup(h->location_id), xstrdup(h->message_id),
			h->kind == 'o' ? ENG_OPENED : ENG_CLICKED };
		queued = true;
	}
	pthread_mutex_unlock(&t->lock);
	if (queued)
		poller_wake(t->writer);
	else
		log_warn("tracking: queue full: a hit on messageId=%s is not counted", h->message_id);
}

static int64_t
writer_step(void *arg, void **slot)
{
	struct tracker *t = arg;
	struct hit *q;
	size_t n;
	int added = 0;

	(void)slot;
	pthread_mutex_lock(&t->lock);
	n = t->n;
	if (n == 0) {
		pthread_mutex_unlock(&t->lock);
		return TRACK_FLUSH_MS;
	}
	q = t->q;
	t->q = xcalloc(TRACK_QUEUE_MAX, sizeof(*t->q));
	t->n = 0;
	pthread_mutex_unlock(&t->lock);
	for (size_t i = 0; i < n; i++) {
		struct engage_add ev = { engage_name(q[i].kind), "" };
		int r = store_engage_add(t->app->store, q[i].location_id, q[i].message_id, &ev, 1, 0);
		if (r < 0)
			log_error("tracking: messageId=%s %s not recorded (store error)", q[i].message_id, ev.event);
		else
			added += r;
		free(q[i].location_id);
		free(q[i].message_id);
	}
	free(q);
	if (added > 0)
		engagement_wake(t->app->engagement);
	return 0;
}

struct tracker *
tracking_start(struct app *app)
{
	struct tracker *t = xcalloc(1, sizeof(*t));
	struct poller_params pp = { .name = "tracking", .threads = 1, .max_wait_ms = TRACK_FLUSH_MS,
		.step = writer_step, .ctx = t };

	t->app = app;
	t->q = xcalloc(TRACK_QUEUE_MAX, sizeof(*t->q));
	pthread_mutex_init(&t->lock, NULL);
	if (!(t->writer = poller_start(&pp))) {
		pthread_mutex_destroy(&t->lock);
		free(t->q);
		free(t);
		return NULL;
	}
	return t;
}

void
tracking_stop(struct tracker *t)
{
	if (!t)
		return;
	poller_stop(t->writer);
	/* what the last step did not take: written now */
	(void)writer_step(t, NULL);
	pthread_mutex_destroy(&t->lock);
	free(t->q);
	free(t);
}

/* 1x1 transparent GIF89a */
static const unsigned char pixel_gif[] = {
	0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
	0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};

static void
not_found(struct http_response *resp)
{
	resp->status = 404;
	resp->content_type = "text/plain; charset=utf-8";
	resp->body = xstrdup("not found\n");
}

void
tracking_http(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	char kind = req->path[0] ? req->path[1] : '\0';
	const char *tok = kind && req->path[2] == '/' ? req->path + 3 : "";
	size_t n = strlen(tok);
	struct track_hit h = { 0 };
	const struct location_config *loc;
	char *payload;
	bool head = !strcmp(req->method, "HEAD");

	if (!head && strcmp(req->method, "GET")) {
		resp->status = 405;
		resp->content_type = "text/plain; charset=utf-8";
		resp->body = xstrdup("GET only\n");
		return;
	}
	if (kind != 'o' && kind != 'c')
		return not_found(resp);
	if (kind == 'o') {
		if (n < 4 || strcmp(tok + n - 4, ".gif"))
			return not_found(resp);
		n -= 4;
	}
	if (!(payload = track_check(app, tok, n, kind, &h)) || !(loc = config_location(app->cfg, h.location_id))) {
		metrics_inc(M_TRACK_BAD_TOKEN);
		return free(payload), not_found(resp);
	}
	if (!head && now_ms() / 1000 - h.sent_s >= loc->track_min_delay &&
	    !tracking_is_machine(http_header(req, "User-Agent"))) {
		metrics_inc(M_TRACK_COUNTED);
		hit_queue(app, &h);
	} else {
		metrics_inc(M_TRACK_NOT_COUNTED);
	}
	resp->no_store = true;
	if (kind == 'o') {
		resp->status = 200;
		resp->content_type = "image/gif";
		resp->body = xmalloc(sizeof(pixel_gif));
		memcpy(resp->body, pixel_gif, sizeof(pixel_gif));
		resp->body_len = sizeof(pixel_gif);
	} else {
		resp->status = 302;
		resp->content_type = "text/plain; charset=utf-8";
		resp->location = xstrdup(h.url);
		resp->body = xstrdup("");
	}
	free(payload);
}
