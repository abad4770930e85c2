/* mailbridge: the command line. Process-wide library init happens here,
 * before any thread starts (LIBRARIES.md B.6); then the daemon (daemon.c)
 * or an administrator's command (ctl.c). */
#include "app.h"
#include "cli.h"
#include "html_text.h"
#include "log.h"

#include <curl/curl.h>
#include <dlfcn.h>
#include <getopt.h>
#include <gmime/gmime.h>
#include <gnutls/gnutls.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the installed config (from the install prefix: cmake sets it) */
#ifndef MB_DEFAULT_CONFIG
#define MB_DEFAULT_CONFIG "/etc/mailbridge/mailbridge.conf"
#endif
#define DEFAULT_CONFIG MB_DEFAULT_CONFIG

void
main_usage(FILE *out)
{
	fprintf(out,
	    "usage: mailbridge [serve] [-c FILE]\n"
	    "       mailbridge check-config [-q | -n | --keys] [-c FILE]\n"
	    "       mailbridge queue list [--state S] [--location ID] [--older-than 2h] [--json]\n"
	    "       mailbridge queue show ID | retry ID | retry --all-failed | drop ID | flush [-c FILE]\n"
	    "       mailbridge send-test --location ID --to ADDR [-c FILE]\n"
	    "       mailbridge inbound list [STATE] [--json] | retry LOCATION KEY [-c FILE]\n"
	    "       mailbridge inbound parse FILE... [--json]   (what a message would post; no store)\n"
	    "       mailbridge accounts [--json] [-c FILE]\n"
	    "       mailbridge doctor [--location ID] [--to ADDR] [-c FILE]\n"

	    "       mailbridge backup FILE [-c FILE]\n"
	    "       mailbridge store migrate --from sqlite:PATH --to postgresql://...   (a stopped store)\n"
	    "       mailbridge version | --version\n"
	    "       mailbridge trace MESSAGEID|MESSAGE-ID|ADDRESS [--json] [-c FILE]\n"
	    "       mailbridge call-log --location ID --direction inbound|outbound --from E164 --to E164\n"
	    "                 --status completed|answered|busy|no-answer|failed|canceled|voicemail|pending\n"
	    "                 [--recording URL] [-c FILE]\n"
	    "FILE defaults to " DEFAULT_CONFIG ", else conf/mailbridge.conf\n");
}

/* Debian's libcurl-gnutls links libssh2, and curl_global_init calls
 * libssh2_init(0), which initialises OpenSSL's libcrypto: 1.4 MiB more
 * resident (measured: libcrypto 1,460 -> 2,884 KiB) for code nothing here
 * runs, as every curl handle is limited to http and https. libssh2 counts
 * its inits and sets its crypto up only in the first, so an init made
 * first with LIBSSH2_INIT_NO_CRYPTO (1, libssh2.h) keeps libcrypto
 * untouched. Found at run time, as curl's own dependency: a libcurl
 * without libssh2 has no such symbol, and mailbridge links no libssh2. */
#define LIBSSH2_INIT_NO_CRYPTO 0x0001

static void
ssh_init_without_crypto(void)
{
	int (*init)(int) = (int (*)(int))dlsym(RTLD_DEFAULT, "libssh2_init");
	if (init)
		init(LIBSSH2_INIT_NO_CRYPTO);
}

/* that init's matching exit, after curl_global_cleanup's */
static void
ssh_exit(void)
{
	void (*fini)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "libssh2_exit");
	if (fini)
		fini();
}

static void
lib_init(void)
{
	signal(SIGPIPE, SIG_IGN);     /* libetpan writes with send() and no MSG_NOSIGNAL */
	ssh_init_without_crypto();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	gnutls_global_init();
	g_mime_init();
	html_text_init();
}

void
main_lib_deinit(void)
{
	html_text_deinit();
	g_mime_shutdown();
	gnutls_global_deinit();
	curl_global_cleanup();
	ssh_exit();
}

int
main(int argc, char **argv)
{
	enum { OPT_STATE = 256, OPT_OLDER, OPT_JSON, OPT_ALL_FAILED, OPT_KEYS };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "location", required_argument, NULL, 'l' },
		{ "to", required_argument, NULL, 't' },
		{ "from", required_argument, NULL, 'f' },
		{ "direction", required_argument, NULL, 'd' },
		{ "status", required_argument, NULL, 's' },
		{ "recording", required_argument, NULL, 'r' },
		{ "state", required_argument, NULL, OPT_STATE },
		{ "older-than", required_argument, NULL, OPT_OLDER },
		{ "json", no_argument, NULL, OPT_JSON },
		{ "all-failed", no_argument, NULL, OPT_ALL_FAILED },
		{ "keys", optional_argument, NULL, OPT_KEYS },
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "non-default", no_argument, NULL, 'n' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static const struct {
		const char *name;
		int (*run)(const struct ctl_opts *);
	} cmds[] = {
		{ "check-config", ctl_check_config }, { "queue", ctl_queue }, { "send-test", ctl_send_test },
		{ "trace", ctl_trace }, { "call-log", ctl_call_log }, { "inbound", ctl_inbound },
		{ "accounts", ctl_accounts }, { "backup", ctl_backup }, { "doctor", ctl_doctor },
		{ "store", ctl_store },
	};
	struct ctl_opts o = { 0 };
	const char *cmd = "serve";
	int c, r = -1;

	/* GNU getopt permutes: options may come before or after the command
	 * and its arguments, which end up at argv[optind...] */
	while ((c = getopt_long(argc, argv, "c:hqn", opts, NULL)) != -1) {
		switch (c) {
		case 'c': o.path = optarg; break;
		case 'l': o.location = optarg; break;
		case 't': o.to = optarg; break;
		case 'f': o.from = optarg; break;
		case 'd': o.direction = optarg; break;
		case 's': o.status = optarg; break;
		case 'r': o.recording = optarg; break;
		case OPT_STATE: o.state = optarg; break;
		case OPT_OLDER: o.older_than = optarg; break;
		case OPT_JSON: o.json = true; break;
		case OPT_ALL_FAILED: o.all_failed = true; break;
		case OPT_KEYS: o.keys = optarg ? optarg : ""; break;
		case 'q': o.quiet = true; break;
		case 'n': o.non_default = true; break;
		case 'h': main_usage(stdout); return 0;
		case 'V': cmd = "version"; break;
		default: main_usage(stderr); return 2;
		}
	}
	if (optind < argc && strcmp(cmd, "version"))
		cmd = argv[optind++];
	if (!strcmp(cmd, "version")) {
		printf("mailbridge %s (commit %s)\n", MB_VERSION, MB_COMMIT);
		return 0;
	}
	if (!o.path)
		o.path = access(DEFAULT_CONFIG, R_OK) == 0 ? DEFAULT_CONFIG : "conf/mailbridge.conf";
	o.argc = argc - optind;
	o.argv = argv + optind;

	lib_init();
	if (!strcmp(cmd, "serve"))
		r = daemon_serve(o.path, argv);
	for (size_t i = 0; r < 0 && i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i].name))
			r = cmds[i].run(&o);
	if (r < 0) {
		fprintf(stderr, "mailbridge: no command \"%s\"\n", cmd);
		main_usage(stderr);
		r = 2;
	}
	main_lib_deinit();
	return r;
}
