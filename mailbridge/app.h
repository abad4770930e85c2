/* app: the long-lived objects of one running daemon, owned by main and
 * handed to the HTTP handlers and workers; app.c opens and closes them. */
#ifndef MB_APP_H
#define MB_APP_H

#include <stdbool.h>
#include <stdio.h>

struct config;
struct store;
struct sig_keys;
struct outbound;
struct ghl;
struct oauth;
struct imap_watch;
struct plugin_host;

struct app {
	struct config *cfg;
	struct store *store;
	struct sig_keys *keys;
	struct outbound *outbound;   /* NULL in CLI commands */
	struct ghl *ghl;
	struct oauth *oauth;           /* NULL when no client_id is configured */
	struct imap_watch *imap;
	struct plugin_host *plugins;  /* SMS / Call providers */
	unsigned char address_key[32];  /* HMAC key of reply+/bounce+ tokens (the store's) */
};

/* The configuration at path (errors printed to stderr), its log level
 * applied; NULL when it has errors. */
struct config *app_load_config(const char *path);
/* The configuration, the store and the store's keys: 0, or -1 (printed). */
int app_open(struct app *app, const char *path);
/* Frees whatever of the app is set. */
void app_close(struct app *app);

/* main.c: the usage text, and the process-wide library teardown (before
 * a reload's re-exec). */
void main_usage(FILE *out);
void main_lib_deinit(void);

/* The daemon (daemon.c): serves until SIGTERM; argv for a reload's re-exec. */
int daemon_serve(const char *path, char **argv);

/* The administrator's commands (ctl.c), as `mailbridge COMMAND`. */
int ctl_check_config(const char *path, bool quiet);
int ctl_queue(const char *path, int argc, char **argv);
int ctl_inbound(const char *path, int argc, char **argv);
int ctl_call_log(const char *path, const char *location, const char *direction, const char *from, const char *to,
    const char *status, const char *recording);
int ctl_trace(const char *path, int argc, char **argv);
int ctl_send_test(const char *path, const char *location, const char *to);
int ctl_accounts(const char *path);

#endif
