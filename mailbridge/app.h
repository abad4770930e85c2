/* app: the long-lived objects of one running daemon, owned by main and
 * handed to the HTTP handlers and workers. No logic lives here: cli.c
 * opens and closes them for the binary's commands. */
#ifndef MB_APP_H
#define MB_APP_H

struct config;
struct store;
struct sig_keys;
struct outbound;
struct ghl;
struct oauth;
struct imap_watch;
struct plugin_host;
struct unsubscriber;
struct engagement;
struct tracker;

struct app {
	struct config *cfg;
	struct store *store;
	struct sig_keys *keys;
	struct outbound *outbound;   /* NULL in CLI commands */
	struct ghl *ghl;
	struct oauth *oauth;           /* NULL when no client_id is configured */
	struct imap_watch *imap;
	struct plugin_host *plugins;  /* SMS / Call providers */
	struct unsubscriber *unsubscriber;  /* sets DND for unsubscribe requests; NULL in CLI commands */
	struct engagement *engagement;      /* posts engagement events; NULL in CLI commands */
	struct tracker *tracker;            /* queues open and click hits; NULL in CLI commands */
	unsigned char address_key[32];  /* HMAC key of reply+/bounce+ tokens (the store's) */
};

#endif
