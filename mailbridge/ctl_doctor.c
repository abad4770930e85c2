/* ctl_doctor: `mailbridge doctor [--location ID] [--to ADDR]`, what a mail
 * administrator checks by hand before a location goes live, one line per
 * check (OK, WARN or FAIL, and the fix):
 *   - the token, and whether HighLevel's webhooks reach us;
 *   - the relay: connect, TLS as configured, AUTH (stopping before DATA),
 *     and with --to a real test message;
 *   - the IMAP login, the folder, IDLE;
 *   - DNS (libunbound, dns.h): SPF of the From domain passing for the
 *     relay's addresses, the DKIM selector's key, DMARC and its policy, MX
 *     of the reply domain.
 * Exit 0 when nothing FAILed, 1 otherwise. */
#include "app.h"
#include "cli.h"
#include "config.h"
#include "dns.h"
#include "log.h"
#include "mailauth.h"
#include "mailboxes.h"
#include "netaddr.h"
#include "oauth.h"
#include "outbound.h"
#include "store_jobs.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct doctor {
	struct app *app;
	struct dns *dns;
	char *dns_error;           /* the resolver could not be set up */
	int fails, warns;
};

static void
report(struct doctor *doc, enum ctl_level lvl, const char *check, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
report(struct doctor *doc, enum ctl_level lvl, const char *check, const char *fmt, ...)
{
	static const char *const names[] = { "OK", "WARN", "FAIL" };
	va_list ap;
	printf("  %-4s  %-9s ", names[lvl], check);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	doc->fails += lvl == CTL_FAIL;
	doc->warns += lvl == CTL_WARN;
}

/* libunbound behind the SPF evaluator's lookups */
static int
lk_txt(void *ctx, const char *name, char ***out)
{
	char *e = NULL;
	int n = dns_txt(ctx, name, out, &e);
	free(e);
	return n;
}

static int
lk_mx(void *ctx, const char *name, char ***out)
{
	char *e = NULL;
	int n = dns_mx(ctx, name, out, &e);
	free(e);
	return n;
}

static int
lk_addrs(void *ctx, const char *name, struct sockaddr_storage **out)
{
	char *e = NULL;
	int n = dns_addrs(ctx, name, out, &e);
	free(e);
	return n;
}

static void
newest_at(const struct job *j, void *arg)
{
	*(int64_t *)arg = j->created_at;
}

static void
check_token_and_webhooks(struct doctor *doc, const struct location_config *loc)
{
	struct job_filter f = { .state = -1, .location_id = loc->id };
	char tok[64];
	int total = 0;
	int64_t last = 0;
	static const enum ctl_level levels[] = { [TOKEN_OK] = CTL_OK, [TOKEN_WARN] = CTL_WARN, [TOKEN_BAD] = CTL_FAIL };
	enum ctl_level lvl = levels[oauth_token_state(doc->app->store, loc, tok, sizeof(tok))];

	report(doc, lvl, "token", "%s%s", tok, lvl == CTL_OK ? "" :
	    " - fix: install the app for this location (or set token = for a static one)");
	/* the newest job is the last webhook HighLevel delivered here */
	if (store_job_list(doc->app->store, &f, 1, &total, newest_at, &last) < 0) {
		report(doc, CTL_WARN, "webhooks", "the store could not be read");
		return;
	}
	if (total > 0) {
		char when[32];
		iso_time(last, when, sizeof(when));
		report(doc, CTL_OK, "webhooks", "last outbound message %s (%d kept)", when, total);
	} else {
		report(doc, CTL_WARN, "webhooks", "none received yet - fix: the app's Delivery URL must be %s/webhooks/provider "
		    "and reach this server", doc->app->cfg->public_url);
	}
}

static void
check_relay(struct doctor *doc, const struct location_config *loc, const char *to)
{
	char *detail = NULL;
	int r = outbound_probe_relay(loc, &detail);

	report(doc, r == 0 ? (loc->smtp.tls_mode != TLS_MODE_NONE && !loc->smtp.tls_verify ? CTL_WARN : CTL_OK) :
	    CTL_FAIL, "relay", "%s%s", detail, r == 0 ? "" : " - fix: smtp_host, smtp_port, smtp_tls, smtp_user");
	free(detail);
	if (r == 0 && to) {
		char *out = NULL;
		size_t len;
		FILE *f = open_memstream(&out, &len);
		r = outbound_send_test(doc->app, loc, to, f);
		fclose(f);
		report(doc, r == 0 ? CTL_OK : CTL_FAIL, "send-test", "to %s: %s", to,
		    r == 0 ? "accepted by the relay" : "NOT accepted (mailbridge send-test shows the dialogue)");
		free(out);
	}
}

static void
check_imap(struct doctor *doc, const struct location_config *loc)
{
	char *detail = NULL;
	bool idle = false;
	int r;

	if (!loc->imap.host) {
		report(doc, CTL_OK, "imap", "not used (replies come by LMTP, or not at all)");
		return;
	}
	r = mailboxes_probe(doc->app->cfg, loc, &idle, &detail);
	report(doc, r < 0 ? CTL_FAIL : idle ? CTL_OK : CTL_WARN, "imap", "%s%s", detail,
	    r < 0 ? " - fix: imap_host, imap_port, imap_tls, imap_user, imap_password" : "");
	free(detail);
}

/* The addresses the relay sends from: relay_ips, else smtp_host's. */
static int
relay_addrs(struct doctor *doc, const struct location_config *loc, struct sockaddr_storage **out)
{
	struct sockaddr_storage ss;
	char *e = NULL;
	int n = 0;

	*out = NULL;
	if (!loc->relay_ips) {
		if (netaddr_from_string(loc->smtp.host, &ss) == 0) {
			*out = xmalloc(sizeof(ss));
			**out = ss;
			return 1;
		}
		n = dns_addrs(doc->dns, loc->smtp.host, out, &e);
		free(e);
		return n;
	}
	for (const char *p = loc->relay_ips; *p;) {
		size_t len = strcspn(p, ", \t");
		char *one = xasprintf("%.*s", (int)len, p);
		if (len && netaddr_from_string(one, &ss) == 0) {
			*out = xrealloc(*out, (size_t)(n + 1) * sizeof(ss));
			(*out)[n++] = ss;
		}
		free(one);
		p += len;
		p += strspn(p, ", \t");
	}
	return n;
}

/* The first record at name that starts with prefix (case-insensitively);
 * 1 with *rec_r, 0 none, -1 the question failed. */
static int
record_at(struct doctor *doc, const char *name, const char *prefix, char **rec_r)
{
	char **txt = NULL, *e = NULL;
	int n = dns_txt(doc->dns, name, &txt, &e), found = 0;

	*rec_r = NULL;
	for (int i = 0; i < n && !found; i++)
		if (!strncasecmp(txt[i], prefix, strlen(prefix))) {
			*rec_r = xstrdup(txt[i]);
			found = 1;
		}
	dns_strings_free(txt);
	free(e);
	return n < 0 ? -1 : found;
}

static void
check_spf(struct doctor *doc, const struct location_config *loc, const char *domain)
{
	const struct spf_lookup lk = { doc->dns, lk_txt, lk_mx, lk_addrs };
	struct sockaddr_storage *ips;
	int n = relay_addrs(doc, loc, &ips), public = 0;

	for (int i = 0; i < n; i++)
		public += netaddr_is_public((struct sockaddr *)&ips[i]);
	if (n <= 0 || public == 0) {
		/* no public address to evaluate for: is there a record at all? */
		char *rec = NULL;
		int t = record_at(doc, domain, "v=spf1", &rec);
		if (t < 0)
			report(doc, CTL_WARN, "spf", "%s: the question failed", domain);
		else
			report(doc, rec ? CTL_WARN : CTL_FAIL, "spf", "%s: %s%s%s - fix: %s", domain, rec ? "\"" : "no SPF record",
			    rec ? rec : "", rec ? "\"" : "", rec ? "set relay_ips to the public addresses the relay sends from, "
			    "to check them" : "publish TXT \"v=spf1 ip4:<the relay's public address> -all\"");
		free(rec);
		free(ips);
		return;
	}
	for (int i = 0; i < n; i++) {
		char ip[64], *detail = NULL;
		enum spf_result r;
		enum ctl_level lvl;
		if (!netaddr_is_public((struct sockaddr *)&ips[i]))
			continue;
		netaddr_to_string((struct sockaddr *)&ips[i], ip, sizeof(ip));
		r = spf_check(&lk, domain, (struct sockaddr *)&ips[i], &detail);
		lvl = r == SPF_PASS ? CTL_OK : r == SPF_FAIL || r == SPF_NONE || r == SPF_PERMERROR ? CTL_FAIL : CTL_WARN;
		report(doc, lvl, "spf", "%s for %s: %s (%s)%s", domain, ip, spf_result_name(r), detail,
		    lvl == CTL_OK ? "" : " - fix: add ip4:/ip6: of this address to the record, or include: the relay's");
		free(detail);
	}
	free(ips);
}

static void
check_dkim(struct doctor *doc, const struct location_config *loc, const char *domain)
{
	char *name, *rec = NULL, *p;
	int r;

	if (!loc->dkim_selector) {
		report(doc, CTL_WARN, "dkim", "not checked - fix: set dkim_selector = the selector the relay signs "
		    "%s's mail with (README: DKIM with OpenDKIM)", domain);
		return;
	}
	name = xasprintf("%s._domainkey.%s", loc->dkim_selector, domain);
	r = record_at(doc, name, "", &rec);
	/* a key record may omit v=DKIM1; its p= is the public key (empty: revoked) */
	p = rec ? mailauth_tag(rec, "p") : NULL;
	if (r < 0)
		report(doc, CTL_WARN, "dkim", "%s: the question failed", name);
	else if (!rec || !p)
		report(doc, CTL_FAIL, "dkim", "%s: no key published - fix: publish the TXT record opendkim-genkey "
		    "wrote (README: DKIM with OpenDKIM)", name);
	else if (!*p)
		report(doc, CTL_FAIL, "dkim", "%s: the key is revoked (p= is empty)", name);
	else
		report(doc, CTL_OK, "dkim", "%s: key published (%zu characters)", name, strlen(p));
	free(p);
	free(rec);
	free(name);
}

static void
check_dmarc(struct doctor *doc, const char *domain)
{
	char *name = xasprintf("_dmarc.%s", domain), *rec = NULL, *p;
	int r = record_at(doc, name, "v=DMARC1", &rec);

	p = rec ? mailauth_tag(rec, "p") : NULL;
	if (r < 0)
		report(doc, CTL_WARN, "dmarc", "%s: the question failed", name);
	else if (!rec)
		report(doc, CTL_FAIL, "dmarc", "%s: no DMARC record - fix: publish TXT \"v=DMARC1; p=none; "
		    "rua=mailto:dmarc@%s\" (Gmail and Yahoo require one of bulk senders)", name, domain);
	else if (!p || (strcasecmp(p, "none") && strcasecmp(p, "quarantine") && strcasecmp(p, "reject")))
		report(doc, CTL_FAIL, "dmarc", "%s: \"%s\" has no valid p= policy", name, rec);
	else if (!strcasecmp(p, "none"))
		report(doc, CTL_WARN, "dmarc", "%s: p=none (reports only; nothing is protected yet) - fix: move to "
		    "p=quarantine once reports show all mail aligned", name);
	else
		report(doc, CTL_OK, "dmarc", "%s: p=%s", name, p);
	free(p);
	free(rec);
	free(name);
}

static void
check_mx(struct doctor *doc, const struct location_config *loc)
{
	char **hosts = NULL, *e = NULL;
	int n = dns_mx(doc->dns, loc->reply_domain, &hosts, &e);

	if (n < 0)
		report(doc, CTL_WARN, "mx", "%s: %s", loc->reply_domain, e);
	else if (n == 0)
		report(doc, CTL_FAIL, "mx", "%s has no MX - fix: replies to this reply_domain cannot arrive; publish an MX "
		    "for the Postfix that delivers to %s", loc->reply_domain, loc->imap.host ? "the mailbox" : "mailbridge (LMTP)");
	else
		report(doc, CTL_OK, "mx", "%s: %s%s", loc->reply_domain, hosts[0], n > 1 ? " (and others)" : "");
	dns_strings_free(hosts);
	free(e);
}

static void
doctor_location(struct doctor *doc, const struct location_config *loc, const char *to)
{
	const char *domain = strchr(loc->from_addr, '@') + 1;

	printf("[location %s]\n", loc->id);
	check_token_and_webhooks(doc, loc);
	check_relay(doc, loc, to);
	check_imap(doc, loc);
	if (!doc->dns) {
		report(doc, CTL_WARN, "dns", "not checked: %s - fix: [server] dns_resolver", doc->dns_error);
		return;
	}
	check_spf(doc, loc, domain);
	check_dkim(doc, loc, domain);
	check_dmarc(doc, domain);
	check_mx(doc, loc);
}

int
ctl_doctor(const struct ctl_opts *o)
{
	struct app app;
	struct doctor doc = { &app, NULL, NULL, 0, 0 };
	const struct location_config *only = NULL;

	if (app_open_readonly(&app, o->path) < 0)
		return 1;
	if (o->location && !(only = config_location(app.cfg, o->location))) {
		fprintf(stderr, "mailbridge doctor: location %s is not configured\n", o->location);
		app_close(&app);
		return 1;
	}
	/* the checks speak for themselves: the library's info lines would
	 * only interleave with them */
	log_set_level(LOG_LVL_ERROR);
	doc.dns = dns_open(app.cfg->dns_resolver, &doc.dns_error);
	for (size_t i = 0; i < app.cfg->n_locations; i++)
		if (!only || only == &app.cfg->locations[i])
			doctor_location(&doc, &app.cfg->locations[i], o->to);
	printf("%d failed, %d warning(s)\n", doc.fails, doc.warns);
	dns_close(doc.dns);
	free(doc.dns_error);
	app_close(&app);
	return doc.fails ? 1 : 0;
}
