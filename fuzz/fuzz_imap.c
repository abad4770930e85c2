/* Fuzz target: everything an IMAP server can say to one watched mailbox
 * (greeting, CAPABILITY, LOGIN, SELECT with UIDVALIDITY/UIDNEXT, UID
 * SEARCH and FETCH with literals, flags, untagged EXISTS riding on any
 * response, IDLE continuation and DONE, NOOP, LOGOUT), through the real
 * imap_session and, for each fetched message, the core's sink
 * (mailboxes.c: inbound_handle with its store). HighLevel is a closed port, so every message ends "retry later"
 * after MIME parsing and dedupe; the API itself is fuzzed elsewhere.
 *
 * The server is a loopback relay fed from the input (relay.h). libetpan
 * parses IMAP; a hang or crash in it would stop a mailbox for good, as
 * the SMTP reply target showed for EHLO (netstream_smtp_replies). */
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "imap_session.h"
#include "log.h"
#include "mailboxes.h"
#include "relay.h"
#include "store.h"
#include "store_inbound.h"
#include "tmpdir.h"

#include <curl/curl.h>
#include <gmime/gmime.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static struct app app;
static const struct location_config *loc;
static struct imap_mailbox box;
static struct imap_sink sink;
static struct relay relay = { .listen_fd = -1 };

static int
setup(void)
{
	static char dir[] = "/tmp/mb-fuzz-imap-XXXXXX";
	char path[256];
	char *err = NULL;
	FILE *f;

	signal(SIGPIPE, SIG_IGN);
	/* MB_FUZZ_DEBUG=1 shows what one input made the session do */
	log_set_level(getenv("MB_FUZZ_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
	g_mime_init();               /* as main's lib_init() */
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (relay_listen(&relay) < 0 || !mkdtemp(dir))
		return -1;
	fuzz_tmpdir_remove_at_exit(dir);
	snprintf(path, sizeof(path), "%s/mailbridge.conf", dir);
	if (!(f = fopen(path, "w")))
		return -1;
	fprintf(f, "[highlevel]\napi_base = http://127.0.0.1:1\nrequire_signature = no\n"
	    "[store]\ndata_dir = %s\n"
	    "[location LFuzz]\nfrom = s@x.test\nsmtp_host = 127.0.0.1\nsmtp_tls = none\ntoken = t\n"
	    "imap_host = 127.0.0.1\nimap_port = %d\nimap_tls = none\nimap_user = u\nimap_password = p\n",
	    dir, relay.port);
	fclose(f);
	chmod(path, 0600);
	if (!(app.cfg = config_load(path, stderr)) || !(loc = config_location(app.cfg, "LFuzz")))
		return -1;
	if (!(app.store = store_open(app.cfg->data_dir, &err))) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	{
		struct ghl_params gp = { .api_base = app.cfg->api_base, .timeout = app.cfg->api_timeout,
			.rate_limit = app.cfg->rate_limit, .rate_window = app.cfg->rate_window };
		app.ghl = ghl_new(&gp);
	}
	mailboxes_mailbox_init(&box, app.cfg, loc);
	sink = *mailboxes_sink(mailboxes_new(&app));   /* kept for the run */
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct imap_session s = { 0 };
	char *err = NULL;

	if (!ready)
		ready = setup() == 0 ? 1 : -1;
	if (ready < 0 || relay_start(&relay, data, size) < 0)
		return 0;
	s.mb = &box;
	s.sink = &sink;
	/* every input starts from "never seen this mailbox" */
	store_checkpoint_put(app.store, loc->id, &(struct imap_checkpoint){ 0 });
	if (imap_session_connect(&s, &err) == 0) {
		free(err);
		err = NULL;
		if (imap_session_catchup(&s, &err) >= 0 && imap_session_idle_start(&s, &err) >= 0) {
			(void)imap_session_buffered(&s);
			(void)imap_session_pending(&s);
			imap_session_idle_done(&s, &err);
		}
	}
	free(err);
	imap_session_close(&s, true);
	relay_stop(&relay);
	return 0;
}
