/* oauth: HighLevel marketplace install flow and per-location tokens.
 *
 * Tokens live in the store. Refresh tokens are single-use, so refreshes
 * of one location are serialised by a per-location mutex and the new pair
 * is committed to the store before the new access token is handed out.
 * A refresh refused with 400/401 marks the location "needs re-install";
 * its work then waits (GHL_AUTH) instead of failing. Agency (Company)
 * installs keep the company token under "company:<companyId>" and mint
 * location tokens from it when a location needs one. */
#ifndef MB_OAUTH_H
#define MB_OAUTH_H

#include <stdbool.h>

#include "http.h"

struct config;
struct store;
struct ghl;
struct oauth;

#define OAUTH_SCOPES "conversations/message.write conversations/message.readonly " \
	"conversations.readonly conversations.write contacts.readonly contacts.write"
#define OAUTH_CONSENT_URL "https://marketplace.gohighlevel.com/v2/oauth/chooselocation"
#define OAUTH_REFRESH_MARGIN_MS (5 * 60 * 1000)

struct oauth *oauth_new(const struct config *cfg, struct store *st, struct ghl *g);
void oauth_free(struct oauth *o);

/* A valid access token for the location (malloc'd into *token_r).
 * stale: the token that just got a 401, or NULL; a refresh happens only
 * when the stored token is still that one (two threads -> one refresh).
 * Returns 1 = token, 0 = none or needs re-install, -1 = temporary error. */
int oauth_access_token(struct oauth *o, const char *location_id, const char *stale, char **token_r);

/* GET /oauth/start and GET /oauth/callback; app is struct app *. */
void oauth_http_start(void *app, const struct http_request *req, struct http_response *resp);
void oauth_http_callback(void *app, const struct http_request *req, struct http_response *resp);
/* INSTALL / UNINSTALL webhook effects (webhook.c verifies and parses).
 * Install records the location and, for agency installs, mints its token
 * when the company token is known. Uninstall deletes the tokens only:
 * queued history stays. Return 0 or -1 (logged). */
int oauth_on_install(struct oauth *o, const char *company_id, const char *location_id);
int oauth_on_uninstall(struct oauth *o, const char *company_id, const char *location_id);

/* A location's token as accounts, doctor and /status show it ("until
 * <time>", "static (config)", "needs re-install", ...) in buf, and how
 * healthy that is. */
enum token_health { TOKEN_OK, TOKEN_WARN, TOKEN_BAD };
struct location_config;
enum token_health oauth_token_state(struct store *st, const struct location_config *loc, char *buf, size_t len);

#endif
