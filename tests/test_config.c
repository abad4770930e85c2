#include "config.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/mb-test-config-XXXXXX";

static char *
write_conf(const char *name, const char *text, mode_t mode)
{
	char *path;
	FILE *f;
	if (asprintf(&path, "%s/%s", dir, name) < 0)
		abort();
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
	return path;
}

/* Loads text; returns the config (or NULL) and the error output. */
static struct config *
load(const char *text, char **errors)
{
	char *path = write_conf("main.conf", text, 0600);
	size_t len;
	FILE *err = open_memstream(errors, &len);
	struct config *cfg = config_load(path, err);
	fclose(err);
	free(path);
	return cfg;
}

/* The last occurrence of needle in hay (NULL if none). */
static const char *
strrstr_last(const char *hay, const char *needle)
{
	const char *last = NULL;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
		last = p;
	return last;
}

static const char *good_loc =
    "[location L1]\nfrom = Support <s@x.test>\nsmtp_host = 127.0.0.1\nsmtp_tls = none\n";

int
main(void)
{
	static const struct {
		const char *text;
		bool ok;
		const char *expect;   /* substring of the error output */
	} rows[] = {
		{ "[server]\nlisten = 127.0.0.1:9000\n", true, NULL },
		{ "[server]\nlisten = nope\n", false, "main.conf:2: listen must be host:port" },
		/* what serve refuses, refused here (check-config) */
		{ "[server]\nlisten = [::1]:9000\n", true, NULL },
		{ "[server]\nlisten = localhost:9000\n", true, NULL },
		{ "[server]\nlisten = ::1:9000\n", false, "main.conf:2: listen ::1 is not an IPv4 address, an IPv6" },
		{ "[server]\nlisten = mb.example:9000\n", false, "main.conf:2: listen mb.example is not an IPv4" },
		{ "[server]\nlisten = 127.0.0.1:70000\n", false, "main.conf:2: listen must be host:port" },
		{ "[server]\npublic_url = not a url\n", false, "main.conf:2: public_url must be the http(s) URL" },
		{ "[server]\npublic_url = ftp://x.test/\n", false, "main.conf:2: public_url must be" },
		{ "[server]\npublic_url = https://mb.example.com/base\n", true, NULL },
		{ "[server]\nlmtp_listen = [::1]:2424\n", true, NULL },
		{ "[server]\nlmtp_listen = unix:/run/mailbridge/lmtp\n", true, NULL },
		{ "[server]\nlmtp_listen = mx.example:24\n", false, "main.conf:2: lmtp_listen (host:port or unix:/path)" },
		/* libinih skips what it cannot parse: each such line is an error */
		{ "[server]\nlisten = 127.0.0.1:9000\nthis line is bad\n", false,
		  "main.conf:3: no '=' in this line (name = value expected): this line is bad\n" },
		{ "[server\nlisten = 127.0.0.1:9000\n", false, "main.conf:1: section header without ']': [server\n" },
		{ "[server]\nlisten = 127.0.0.1:9000\n  ; an indented comment\n# another\n\n", true, NULL },
		/* a missing file is an error; a glob without match a warning;
		 * include_try may miss */
		{ "include = nothere.conf\n", false, "main.conf:1: include " },
		{ "include = nothere.d/*.conf\n", true, "main.conf:1: warning: include " },
		{ "include_try = nothere.conf\ninclude_try = nothere.d/*.conf\n", true, NULL },
		{ "[server]\nmax_body = 12x\n", false, "main.conf:2: max_body: not a number" },
		{ "[server]\nmax_body = 1\n", false, "main.conf:2: max_body: out of range" },
		{ "[server]\nbogus = 1\n", false, "main.conf:2: unknown key 'bogus' in [server]" },
		{ "[nope]\na = 1\n", false, "main.conf:2: unknown section [nope]" },
		{ "stray = 1\n", false, "unknown key 'stray' in [highlevel]" },
		{ "[highlevel]\napi_base = ftp://x\n", false, "api_base must be an http(s) URL" },
		{ "[highlevel]\nrequire_signature = maybe\n", false, "require_signature: not yes/no" },
		{ "[location L1]\nsmtp_host = h\n", false, "from is required" },
		{ "[location L1]\nfrom = bad\nsmtp_host = h\n", false, "from: not a valid mailbox" },
		{ "[location L1]\nfrom = a@b.test\n", false, "smtp_host is required" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nmode = custom\n", false, "needs provider_id" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nother_sender_replies = thread\n", true, NULL },
		/* tracking needs a public_url recipients can reach */
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\ntrack_opens = yes\n", true,
		  "main.conf:4: warning: tracking links go to public_url http://127.0.0.1:8080, which no recipient" },
		{ "[server]\npublic_url = http://mb.example/\n[location L1]\nfrom = a@b.test\nsmtp_host = h\n"
		  "track_clicks = yes\n", true, "main.conf:6: warning: tracking links go to public_url http://mb.example/: use https" },
		{ "[server]\npublic_url = https://mb.example/\n[location L1]\nfrom = a@b.test\nsmtp_host = h\n"
		  "track_clicks = yes\ntrack_opens = yes\n", true, NULL },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nother_sender_replies = mine\n", false,
		  "other_sender_replies must be own or thread" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nsmtp_tls = maybe\n", false,
		  "main.conf:4: smtp_tls must be none, starttls or tls (got 'maybe')" },
		/* a location's errors name the line of the key at fault */
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nsmtp_user = u\n", false,
		  "main.conf:4: smtp_user is set but no smtp_password" },
		{ "[location L1]\nsmtp_host = h\nfrom = bad\n", false, "main.conf:3: from: not a valid mailbox" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\n\nmode = custom\n", false,
		  "main.conf:5: mode = custom needs provider_id" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nimap_after = move:\n", false,
		  "main.conf:4: imap_after must be seen, none or move:<folder> (got 'move:')" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nimap_after = move:Archive\n", true, NULL },
		{ "[server]\nlog_level = loud\n", false, "main.conf:2: log_level must be error, warn, info or debug" },
		/* the reply and return mailboxes take plus tokens: a plain address */
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nreply_address = sales+x@b.test\n", false,
		  "main.conf:4: reply_address must be a plain address without '+'" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nreturn_path = <b@b.test>\n", false,
		  "main.conf:4: return_path must be a plain address" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nreply_address = sales@b.test\n", true, NULL },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nsmtp_user = u\n", false, "no smtp_password" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\ndelivered_on = never\n", false, "delivered_on must be" },
		{ "[location bad id]\nfrom = a@b.test\n", false, "location id must be" },
		/* a named key that is missing is an error, not skipped */
		{ "[highlevel]\nwebhook_key_ed25519 = nothere.pem\n", false,
		  "main.conf:2: webhook_key_ed25519 /tmp/" },
		{ "[highlevel]\nwebhook_key_ed25519 =\nwebhook_key_rsa =\n", true, NULL },
		{ "[highlevel]\nwebhook_key_ed25519 =\nwebhook_key_rsa =\nrequire_signature = yes\n", false,
		  "require_signature is on but no webhook key is set" },
		/* passwords never cross the network in clear text by default */
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = relay.example\nsmtp_tls = none\nsmtp_user = u\n"
		  "smtp_password = p\n", false, "smtp_user with smtp_tls = none would send the password in clear text" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = relay.example\nsmtp_tls = none\nsmtp_user = u\n"
		  "smtp_password = p\nsmtp_allow_plaintext_auth = yes\n", true, NULL },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = 127.0.0.1\nsmtp_tls = none\nsmtp_user = u\n"
		  "smtp_password = p\n", true, NULL },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nimap_host = imap.example\nimap_tls = none\n"
		  "imap_user = u\nimap_password = p\n", false, "imap_user with imap_tls = none would send the password" },
		{ "[location L1]\nfrom = a@b.test\nsmtp_host = h\nimap_host = ::1\nimap_tls = none\n"
		  "imap_user = u\nimap_password = p\n", true, NULL },
		/* the attachment allow-list */
		{ "[store]\nattachment_allow = 10.0.0.0/8 https://files.internal:8443\n", true, NULL },
		{ "[store]\nattachment_allow = files.internal\n", false, "main.conf:2: attachment_allow: \"files.internal\"" },
		/* all errors in one run, each with its line */
		{ "[server]\nlisten = x\nbogus = 2\n[store]\nworkers = 0\n", false, "main.conf:5: workers: out of range" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *errors = NULL;
		char *text;
		struct config *cfg;
		if (asprintf(&text, "[highlevel]\nrequire_signature = no\n%s", rows[i].text) < 0)
			abort();
		cfg = load(text, &errors);
		CHECK_IDX((cfg != NULL) == rows[i].ok, i);
		/* the two prefix lines shift every line number by 2 */
		if (rows[i].expect) {
			const char *e = rows[i].expect;
			char *shifted = NULL;
			const char *colon = strstr(e, ".conf:");
			if (colon) {
				int line = atoi(colon + 6);
				const char *rest = strchr(colon + 6, ':');
				if (asprintf(&shifted, "%.*s%d%s", (int)(colon + 6 - e), e, line + 2, rest) < 0)
					abort();
				e = shifted;
			}
			CHECK_IDX(errors && strstr(errors, e), i);
			if (!(errors && strstr(errors, e)))
				fprintf(stderr, "  expected '%s' in:\n%s", e, errors ? errors : "");
			free(shifted);
		}
		config_free(cfg);
		free(errors);
		free(text);
	}

	/* where replies and DSNs go: the mailbox, else the older reply+/bounce+ */
	{
		static const struct { const char *loc, *reply, *ret, *tag; } boxes[] = {
			/* the watched mailbox when imap_user is an address */
			{ "imap_host = i\nimap_user = sales@shared.test\nimap_password = p\n", "sales@shared.test",
			  "sales@shared.test", "b" },
			/* else from */
			{ "", "a@b.test", "a@b.test", "b" },
			/* reply_address and return_path as given */
			{ "reply_address = help@b.test\nreturn_path = dsn@b.test\n", "help@b.test", "dsn@b.test", "b" },
			/* reply_domain set and no mailbox address: the older form */
			{ "reply_domain = r.test\n", "reply@r.test", "bounce@r.test", "" },
			/* ... unless a mailbox is watched: from is its address */
			{ "reply_domain = r.test\nimap_host = i\nimap_user = u\nimap_password = p\n", "a@b.test", "a@b.test",
			  "b" },
		};
		for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++) {
			char *errors = NULL, *text, reply[96], ret[96];
			struct config *cfg;
			if (asprintf(&text, "[highlevel]\nrequire_signature = no\n[location L1]\nfrom = a@b.test\n"
			    "smtp_host = h\n%s", boxes[i].loc) < 0)
				abort();
			cfg = load(text, &errors);
			CHECK_IDX(cfg != NULL, i);
			if (cfg) {
				const struct location_config *l = &cfg->locations[0];
				snprintf(reply, sizeof(reply), "%s@%s", l->reply_box.local, l->reply_box.domain);
				snprintf(ret, sizeof(ret), "%s@%s", l->return_box.local, l->return_box.domain);
				CHECK_IDX(!strcmp(reply, boxes[i].reply) && !strcmp(ret, boxes[i].ret), i);
				CHECK_IDX(!strcmp(l->return_box.tag, boxes[i].tag) && !*l->reply_box.tag, i);
			} else {
				fprintf(stderr, "%s", errors);
			}
			config_free(cfg);
			free(errors);
			free(text);
		}
	}

	/* an unreadable password file is one error, not also "no password" */
	{
		char *errors = NULL;
		struct config *cfg = load("[highlevel]\nrequire_signature = no\n[location L1]\nfrom = a@b.test\n"
		    "smtp_host = h\nsmtp_user = u\nsmtp_password_file = nothere\n", &errors);
		CHECK(cfg == NULL);
		CHECK(strstr(errors, "main.conf:7: ") != NULL);
		CHECK(strstr(errors, "no smtp_password") == NULL);
		CHECK(strstr(errors, ": 1 error\n") != NULL);
		if (!strstr(errors, ": 1 error\n"))
			fprintf(stderr, "%s", errors);
		free(errors);
	}

	/* several errors reported together */
	{
		char *errors = NULL;
		struct config *cfg = load("[server]\nlisten = x\nbogus = 2\n[store]\nworkers = 0\n", &errors);
		CHECK(cfg == NULL);
		CHECK(strstr(errors, "main.conf:2:") && strstr(errors, "main.conf:3:") && strstr(errors, "main.conf:5:"));
		CHECK(strstr(errors, "4 errors") != NULL);
		free(errors);
	}

	/* include, defaults, secrets from files, masking, permission warnings */
	{
		char *errors = NULL, *dump = NULL;
		size_t len;
		char *sub;
		FILE *out;
		struct config *cfg;
		if (asprintf(&sub, "%s/locations.d", dir) < 0)
			abort();
		mkdir(sub, 0700);
		free(sub);
		free(write_conf("locations.d/a.conf", good_loc, 0600));
		free(write_conf("locations.d/b.conf", "[location L2]\nfrom = \"Jane Doe\" <j@y.test>\n"
		    "smtp_host = relay\nsmtp_user = u\nsmtp_password_file = ../pw\nmode = custom\nprovider_id = P1\n", 0644));
		free(write_conf("pw", "s3cret\n", 0644));
		cfg = load("[highlevel]\nrequire_signature = no\ninclude = locations.d/*.conf\n", &errors);
		CHECK(cfg != NULL);
		if (!cfg) {
			fprintf(stderr, "%s", errors);
			return test_done("test_config");
		}
		CHECK(cfg->n_locations == 2);
		CHECK(cfg->listen_port == 8080 && strcmp(cfg->listen_host, "127.0.0.1") == 0);
		CHECK(strcmp(cfg->api_base, "https://services.leadconnectorhq.com") == 0);
		const struct location_config *l2 = config_location(cfg, "L2");
		CHECK(l2 && strcmp(l2->smtp.password, "s3cret") == 0);
		CHECK(l2 && strcmp(l2->from_name, "Jane Doe") == 0 && strcmp(l2->from_addr, "j@y.test") == 0);
		CHECK(l2 && strcmp(l2->reply_domain, "y.test") == 0);
		CHECK(l2 && l2->provider_mode == PROVIDER_CUSTOM && l2->smtp.tls_mode == TLS_MODE_STARTTLS);
		CHECK(l2 && l2->smtp.port == 25 && l2->smtp.tls_verify);
		CHECK(strstr(errors, "b.conf: warning: config file is readable by others") != NULL);
		CHECK(strstr(errors, "pw: warning: secret file is readable by others") != NULL);
		out = open_memstream(&dump, &len);
		config_dump(cfg, out, false);
		fclose(out);
		CHECK(strstr(dump, "s3cret") == NULL);
		CHECK(strstr(dump, "smtp_password = ********") != NULL);
		CHECK(strstr(dump, "[location L2]") != NULL);
		CHECK(strstr(dump, "max_body = 4194304") != NULL);
		free(dump);
		/* -n: what differs from the defaults, every location named */
		out = open_memstream(&dump, &len);
		config_dump(cfg, out, true);
		fclose(out);
		CHECK(strstr(dump, "max_body") == NULL && strstr(dump, "[server]") == NULL);
		CHECK(strstr(dump, "[highlevel]\n") && strstr(dump, "\nrequire_signature = no\n"));
		if (!strstr(dump, "require_signature = no"))
			fprintf(stderr, "%s", dump);
		CHECK(strstr(dump, "[location L1]\nfrom = ") != NULL);
		CHECK(strstr(dump, "smtp_password = ********") != NULL && strstr(dump, "s3cret") == NULL);
		CHECK(strstr(dump, "smtp_port") == NULL);
		free(dump);
		free(errors);
		config_free(cfg);
	}

	/* include cycles and fan-out end with an error, not a loop: the
	 * fuzzer found `include = *` repeated in a file that matches itself */
	{
		char *errors = NULL;
		struct config *cfg;
		free(write_conf("loop-a.conf", "include = loop-b.conf\n", 0600));
		free(write_conf("loop-b.conf", "include = loop-a.conf\n", 0600));
		cfg = load("include = main.conf\ninclude = loop-a.conf\n", &errors);
		CHECK(cfg == NULL);
		CHECK(strstr(errors, "main.conf:1: include") && strstr(errors, "main.conf: includes itself"));
		CHECK(strstr(errors, "loop-b.conf:1: include") && strstr(errors, "loop-a.conf: includes itself"));
		free(errors);
		errors = NULL;
		{
			char *fifo;
			if (asprintf(&fifo, "%s/pipe.conf", dir) < 0 || mkfifo(fifo, 0600) < 0)
				abort();
			free(fifo);
		}
		/* a directory, and a FIFO nobody writes to (opening it must not hang) */
		cfg = load("include = .\ninclude = pipe.conf\n", &errors);
		CHECK(cfg == NULL && strstr(errors, "/.: not a regular file") &&
		    strstr(errors, "pipe.conf: not a regular file"));
		free(errors);
		errors = NULL;
		/* a tree without cycles: 8 x 8 f-files, each 8 x 8 g-files,
		 * each 8 x 8 h-files: 262,144 opens if nothing stopped it */
		for (char c = '1'; c <= '8'; c++) {
			char name[16];
			snprintf(name, sizeof(name), "f%c.fan", c);
			free(write_conf(name, "include = g*.fan\ninclude = g*.fan\ninclude = g*.fan\n"
			    "include = g*.fan\ninclude = g*.fan\ninclude = g*.fan\ninclude = g*.fan\n"
			    "include = g*.fan\n", 0600));
			snprintf(name, sizeof(name), "g%c.fan", c);
			free(write_conf(name, "include = h*.fan\ninclude = h*.fan\ninclude = h*.fan\n"
			    "include = h*.fan\ninclude = h*.fan\ninclude = h*.fan\ninclude = h*.fan\n"
			    "include = h*.fan\n", 0600));
			snprintf(name, sizeof(name), "h%c.fan", c);
			free(write_conf(name, "\n", 0600));
		}
		free(write_conf("fan.conf", "include = f*.fan\ninclude = f*.fan\ninclude = f*.fan\n"
		    "include = f*.fan\ninclude = f*.fan\ninclude = f*.fan\ninclude = f*.fan\n"
		    "include = f*.fan\n", 0600));
		cfg = load("include = fan.conf\n", &errors);
		CHECK(cfg == NULL && strstr(errors, "more than 50000 files in one configuration"));
		free(errors);
	}

	/* a glob that strays into big files (logs, a backup) stops at 16 MiB,
	 * and says so once; the bigger file is not parsed at all */
	{
		char *errors = NULL, *big;
		struct config *cfg;
		size_t n = 9u << 20;
		big = malloc(n + 1);
		memset(big, '#', n);
		for (size_t i = 80; i < n; i += 80)
			big[i] = '\n';
		big[n] = '\0';
		free(write_conf("big1.log", big, 0600));
		free(write_conf("big2.log", big, 0600));
		free(write_conf("big3.log", big, 0600));
		free(big);
		cfg = load("include = big*.log\n", &errors);
		CHECK(cfg == NULL && strstr(errors, "big2.log: more than 16 MiB of configuration in one load"));
		CHECK(errors && !strstr(errors, "big3.log"));
		free(errors);
	}

	/* a file per sub-account is the documented layout: 1500 of them load
	 * (a cap of 512 files once broke the 1000-mailbox benchmark) */
	{
		char *errors = NULL, *sub;
		struct config *cfg;
		if (asprintf(&sub, "%s/many.d", dir) < 0)
			abort();
		mkdir(sub, 0700);
		free(sub);
		for (int i = 0; i < 1500; i++) {
			char name[32], *text;
			snprintf(name, sizeof(name), "many.d/L%04d.conf", i);
			if (asprintf(&text, "[location L%04d]\nfrom = a@x.test\nsmtp_host = h\nsmtp_tls = none\n", i) < 0)
				abort();
			free(write_conf(name, text, 0600));
			free(text);
		}
		cfg = load("[highlevel]\nrequire_signature = no\ninclude = many.d/*.conf\n", &errors);
		CHECK(cfg && cfg->n_locations == 1500);
		if (!cfg)
			fprintf(stderr, "%s", errors);
		config_free(cfg);
		free(errors);
	}

	/* secrets in URLs are masked in the dump; a plugin in use without a
	 * secret is warned about */
	{
		char *errors = NULL, *dump = NULL;
		size_t len;
		FILE *out;
		struct config *cfg = load("[highlevel]\nrequire_signature = no\n"
		    "[plugin kannel]\nsendsms_url = http://mb:pw1@kannel.lan:13013/cgi-bin/sendsms?username=mb&password=pw2\n"
		    "api_key = k3\nmo_location = L1\n"
		    "[location L1]\nfrom = a@b.test\nsmtp_host = h\nsmtp_tls = none\nsms = kannel\n"
		    "[location L2]\nfrom = c@b.test\nsmtp_host = h\nsmtp_tls = none\nsms = kannel\n", &errors);
		CHECK(cfg != NULL);
		CHECK(errors && strstr(errors, "warning: [plugin kannel] has no secret"));
		CHECK(errors && strstr(errors, "[plugin kannel] has no secret") == strrstr_last(errors, "[plugin kannel] has no secret"));
		out = open_memstream(&dump, &len);
		if (cfg)
			config_dump(cfg, out, false);
		fclose(out);
		CHECK(!strstr(dump, "pw1") && !strstr(dump, "pw2") && !strstr(dump, "k3"));
		CHECK(strstr(dump, "sendsms_url = http://****@kannel.lan:13013/cgi-bin/sendsms?username=****&password=****"));
		CHECK(strstr(dump, "mo_location = L1"));
		free(dump);
		free(errors);
		config_free(cfg);
	}

	/* an include inside a section that adds sections itself: the parent's
	 * section continues afterwards (the fuzzer found a use-after-free) */
	{
		char *errors = NULL;
		struct config *cfg;
		const struct location_config *m1;
		free(write_conf("more1.inc", "[location M2]\nfrom = m2@x.test\nsmtp_host = h\nsmtp_tls = none\n"
		    "[plugin p2]\nx = 1\n", 0600));
		free(write_conf("more2.inc", "[location M3]\nfrom = m3@x.test\nsmtp_host = h\nsmtp_tls = none\n"
		    "[location M4]\nfrom = m4@x.test\nsmtp_host = h\nsmtp_tls = none\n", 0600));
		cfg = load("[highlevel]\nrequire_signature = no\n[plugin p1]\ninclude = more1.inc\ny = 2\n"
		    "[location M1]\nfrom = m1@x.test\ninclude = more2.inc\nsmtp_host = h1\nsmtp_tls = none\n", &errors);
		CHECK(cfg != NULL);
		if (!cfg)
			fprintf(stderr, "%s", errors);
		m1 = cfg ? config_location(cfg, "M1") : NULL;
		CHECK(m1 && strcmp(m1->smtp.host, "h1") == 0);
		CHECK(cfg && cfg->n_locations == 4 && cfg->n_plugin_sections == 2);
		CHECK(cfg && strcmp(cfg->plugin_sections[0].name, "p1") == 0 && cfg->plugin_sections[0].n == 1 &&
		    strcmp(cfg->plugin_sections[0].keys[0], "y") == 0);
		config_free(cfg);
		free(errors);
	}

	/* mailbox parsing */
	{
		static const struct { const char *in; int ok; const char *name, *addr; } mb[] = {
			{ "a@b.test", 0, NULL, "a@b.test" },
			{ "Name <a@b.test>", 0, "Name", "a@b.test" },
			{ "\"Doe, J\" <a@b.test>", 0, "Doe, J", "a@b.test" },
			{ "  a@b.test  ", 0, NULL, "a@b.test" },
			{ "nope", -1, NULL, NULL },
			{ "a@b@c", -1, NULL, NULL },
			{ "Name <a@b.test> trailing", -1, NULL, NULL },
			{ "N\r\nBcc: x <a@b.test>", -1, NULL, NULL },
			{ "<a b@c.test>", -1, NULL, NULL },
		};
		for (size_t i = 0; i < sizeof(mb) / sizeof(mb[0]); i++) {
			char *name, *addr;
			int r = config_parse_mailbox(mb[i].in, &name, &addr);
			CHECK_IDX(r == mb[i].ok, i);
			if (r == 0) {
				CHECK_IDX(strcmp(addr, mb[i].addr) == 0, i);
				CHECK_IDX(mb[i].name ? name && strcmp(name, mb[i].name) == 0 : name == NULL, i);
			}
			free(name);
			free(addr);
		}
	}
	{
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		(void)!system(cmd);
	}
	return test_done("test_config");
}

__attribute__((constructor)) static void
setup(void)
{
	if (!mkdtemp(dir))
		abort();
}
