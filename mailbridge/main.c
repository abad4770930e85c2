/* mailbridge: the command line. Process-wide library init happens here,
 * before any thread starts (LIBRARIES.md B.6); then the daemon (daemon.c)
 * or an administrator's command (ctl.c). */
#include "app.h"
#include "cli.h"
#include "html_text.h"
#include "log.h"

#include <curl/curl.h>
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
	    "       mailbridge check-config [-q] [-c FILE]\n"
	    "       mailbridge queue list|show ID|retry ID|drop ID [-c FILE]\n"
	    "       mailbridge send-test --location ID --to ADDR [-c FILE]\n"
	    "       mailbridge inbound list [STATE] | retry LOCATION KEY [-c FILE]\n"
	    "       mailbridge accounts [-c FILE]\n"
	    "       mailbridge backup FILE [-c FILE]\n"
	    "       mailbridge version | --version\n"
	    "       mailbridge trace MESSAGEID|MESSAGE-ID|ADDRESS [-c FILE]\n"
	    "       mailbridge call-log --location ID --direction inbound|outbound --from E164 --to E164\n"
	    "                 --status completed|answered|busy|no-answer|failed|canceled|voicemail|pending\n"
	    "                 [--recording URL] [-c FILE]\n"
	    "FILE defaults to " DEFAULT_CONFIG ", else conf/mailbridge.conf\n");
}

static void
lib_init(void)
{
	signal(SIGPIPE, SIG_IGN);     /* libetpan writes with send() and no MSG_NOSIGNAL */
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
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "location", required_argument, NULL, 'l' },
		{ "to", required_argument, NULL, 't' },
		{ "from", required_argument, NULL, 'f' },
		{ "direction", required_argument, NULL, 'd' },
		{ "status", required_argument, NULL, 's' },
		{ "recording", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL, *location = NULL, *to = NULL, *cmd = "serve";
	const char *from = NULL, *direction = NULL, *status = NULL, *recording = NULL;
	int c, r;
	bool quiet = false;

	/* GNU getopt permutes: options may come before or after the command
	 * and its arguments, which end up at argv[optind...] */
	while ((c = getopt_long(argc, argv, "c:hq", opts, NULL)) != -1) {
		switch (c) {
		case 'c': path = optarg; break;
		case 'l': location = optarg; break;
		case 't': to = optarg; break;
		case 'f': from = optarg; break;
		case 'd': direction = optarg; break;
		case 's': status = optarg; break;
		case 'r': recording = optarg; break;
		case 'q': quiet = true; break;
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
	if (!path)
		path = access(DEFAULT_CONFIG, R_OK) == 0 ? DEFAULT_CONFIG : "conf/mailbridge.conf";

	lib_init();
	if (!strcmp(cmd, "serve"))
		r = daemon_serve(path, argv);
	else if (!strcmp(cmd, "check-config"))
		r = ctl_check_config(path, quiet);
	else if (!strcmp(cmd, "queue"))
		r = ctl_queue(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "send-test"))
		r = ctl_send_test(path, location, to);
	else if (!strcmp(cmd, "trace"))
		r = ctl_trace(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "call-log"))
		r = ctl_call_log(path, location, direction, from, to, status, recording);
	else if (!strcmp(cmd, "inbound"))
		r = ctl_inbound(path, argc - optind, argv + optind);
	else if (!strcmp(cmd, "accounts"))
		r = ctl_accounts(path);
	else if (!strcmp(cmd, "backup"))
		r = ctl_backup(path, argc - optind, argv + optind);
	else {
		fprintf(stderr, "mailbridge: no command \"%s\"\n", cmd);
		main_usage(stderr);
		r = 2;
	}
	main_lib_deinit();
	return r;
}
