#include "contact.h"
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONTACT_CACHE_MAX 10000

struct contact_entry {
	char *key;                 /* location \n email-or-phone */
	char *contact_id;
	struct contact_entry *next;
};

static pthread_mutex_t contact_lock = PTHREAD_MUTEX_INITIALIZER;
static struct contact_entry *contact_cache;
static size_t contact_count;

static char *
contact_cache_get(const char *loc, const char *who)
{
	char *key = xasprintf("%s\n%s", loc, who), *id = NULL;
	pthread_mutex_lock(&contact_lock);
	for (struct contact_entry *e = contact_cache; e; e = e->next)
		if (!strcasecmp(e->key, key)) {
			id = xstrdup(e->contact_id);
			break;
		}
	pthread_mutex_unlock(&contact_lock);
	free(key);
	return id;
}

static void
contact_cache_put(const char *loc, const char *who, const char *id)
{
	struct contact_entry *e;
	pthread_mutex_lock(&contact_lock);
	if (contact_count < CONTACT_CACHE_MAX) {
		e = xcalloc(1, sizeof(*e));
		e->key = xasprintf("%s\n%s", loc, who);
		e->contact_id = xstrdup(id);
		e->next = contact_cache;
		contact_cache = e;
		contact_count++;
	}
	pthread_mutex_unlock(&contact_lock);
}

char *
contact_find(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, struct ghl_step *s)
{
	struct ghl_result res;
	const char *who = email ? email : phone;
	char *id = contact_cache_get(loc->id, who);

	if (id)
		return id;
	if (ghl_contact_search(app->ghl, loc->id, email, phone, &id, &res) != GHL_OK) {
		ghl_step_from(s, &res, "contact search");
		ghl_result_clear(&res);
		return NULL;
	}
	ghl_result_clear(&res);
	if (!id && !create) {
		s->cls = GHL_PERMANENT;
		free(s->error);
		s->error = xasprintf("no contact with %s %s (HighLevel needs one for this)", email ? "email" : "phone", who);
		return NULL;
	}
	if (!id) {
		if (ghl_contact_upsert(app->ghl, loc->id, email, phone, name, &id, &res) == GHL_OK)
			log_info("contact: created locationId=%s contactId=%s", loc->id, id);
		else
			ghl_step_from(s, &res, "contact upsert");
		ghl_result_clear(&res);
	}
	if (id)
		contact_cache_put(loc->id, who, id);
	return id;
}

char *
contact_conversation_find(struct app *app, const struct location_config *loc, const char *contact_id,
    struct ghl_step *s)
{
	struct ghl_result res;
	char *id = NULL;

	if (ghl_conversation_search(app->ghl, loc->id, contact_id, &id, &res) != GHL_OK) {
		ghl_step_from(s, &res, "conversation search");
		ghl_result_clear(&res);
		return NULL;
	}
	ghl_result_clear(&res);
	if (!id) {
		if (ghl_conversation_create(app->ghl, loc->id, contact_id, &id, &res) != GHL_OK)
			ghl_step_from(s, &res, "conversation create");
		ghl_result_clear(&res);
	}
	return id;
}

int
contact_conversation(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, char **contact_r, char **conversation_r, struct ghl_step *s)
{
	*conversation_r = NULL;
	*contact_r = contact_find(app, loc, email, phone, name, create, s);
	if (*contact_r)
		*conversation_r = contact_conversation_find(app, loc, *contact_r, s);
	return *contact_r && *conversation_r;
}
