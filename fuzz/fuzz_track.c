/* Fuzz target: the tracking endpoints and the link rewriter. Anyone can
 * request /o/ and /c/ with any token; the HTML the rewriter walks comes
 * from the webhook. The first byte picks the mode:
 *   0: the input is the token of GET /o/... or /c/... (the MAC gate);
 *   1: the input is a payload, signed here with the key mailbridge uses,
 *      so the parser behind the gate is reached too;
 *   2: the input is an HTML body for tracking_html, then every link it
 *      made is requested (each must verify and redirect). */
#include "app.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "tracking.h"
#include "tmpdir.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct app app;
static const struct location_config *loc;

static int
setup(void)
{
	static char dir[] = "/tmp/mb-fuzz-track-XXXXXX";
	char path[256];
	FILE *f;

	log_set_level(LOG_LVL_ERROR);
	if (!mkdtemp(dir))
		return -1;
	fuzz_tmpdir_remove_at_exit(dir);
	snprintf(path, sizeof(path), "%s/mailbridge.conf", dir);
	if (!(f = fopen(path, "w")))
		return -1;
	fprintf(f, "[server]\npublic_url = https://mb.example/\n[highlevel]\napi_base = http://127.0.0.1:1\n"
	    "require_signature = no\n[store]\ndata_dir = %s\n[location LT]\nfrom = s@x.test\nsmtp_host = 127.0.0.1\n"
	    "token = t\ntrack_opens = yes\ntrack_clicks = yes\ntrack_min_delay = 0\n", dir);
	fclose(f);
	chmod(path, 0600);
	if (!(f = fopen("/dev/null", "w")))
		return -1;
	app.cfg = config_load(path, f);        /* its warnings (file mode, keys) are not the point */
	fclose(f);
	if (!app.cfg || !(loc = config_location(app.cfg, "LT")))
		return -1;
	memset(app.address_key, 0x5a, sizeof(app.address_key));
	return 0;
}

static void
get(const char *path)
{
	struct http_request req = { .method = "GET", .path = path, .body = "" };
	struct http_response resp = { 0 };

	tracking_http(&app, &req, &resp);
	if (resp.status == 302 && (!resp.location || (strncmp(resp.location, "http://", 7) &&
	    strncmp(resp.location, "https://", 8))))
		abort();           /* a redirect only ever goes to a signed http(s) link */
	free(resp.body);
	free(resp.location);
	free(resp.set_cookie);
}

static char *
b64url(const unsigned char *in, size_t n)
{
	gnutls_datum_t d = { (unsigned char *)in, (unsigned)n }, out = { NULL, 0 };
	char *s;

	if (gnutls_base64_encode2(&d, &out) < 0)
		return NULL;
	s = calloc(1, out.size + 1);
	for (unsigned i = 0; i < out.size && out.data[i] != '='; i++)
		s[i] = out.data[i] == '+' ? '-' : out.data[i] == '/' ? '_' : (char)out.data[i];
	gnutls_free(out.data);
	return s;
}

static void
signed_payload(const uint8_t *data, size_t size)
{
	unsigned char mac[32];
	gnutls_hmac_hd_t h;
	char *p, *m, *path;

	if (size == 0 || gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, app.address_key, 32) < 0)
		return;
	gnutls_hmac(h, "track\n", 6);
	gnutls_hmac(h, data, size);
	gnutls_hmac_deinit(h, mac);
	p = b64url(data, size);
	m = b64url(mac, 16);
	if (p && m) {
		path = malloc(strlen(p) + strlen(m) + 16);
		sprintf(path, "/%c/%s.%s%s", data[0] == 'o' ? 'o' : 'c', p, m, data[0] == 'o' ? ".gif" : "");
		get(path);
		free(path);
	}
	free(p);
	free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	char *s;

	if (!ready)
		ready = setup() == 0 ? 1 : -1;
	if (ready < 0 || size < 1)
		return 0;
	s = malloc(size);
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 3) {
	case 0: {
		char *path = malloc(size + 8);
		snprintf(path, size + 8, "/%c/%s", size > 1 && data[1] & 1 ? 'o' : 'c', s);
		get(path);
		free(path);
		break;
	}
	case 1:
		signed_payload(data + 1, size - 1);
		break;
	default: {
		char *html = tracking_html(&app, loc, s, "m1", 0), *p;
		/* every link made verifies and redirects to what was there */
		for (p = html; p && (p = strstr(p, "https://mb.example/")) != NULL; p++) {
			size_t n = strcspn(p + 18, "\"' >");
			char *path = strndup(p + 18, n);
			get(path);
			free(path);
		}
		free(html);
		break;
	}
	}
	free(s);
	return 0;
}
