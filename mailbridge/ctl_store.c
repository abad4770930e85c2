/* ctl_store: `mailbridge store migrate`, a single instance's SQLite store
 * copied into the PostgreSQL several instances will share. */
#include "cli.h"
#include "log.h"
#include "store.h"
#include "store_copy.h"
#include "store_instances.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void
copied(const char *table, int64_t rows, void *arg)
{
	(void)arg;
	printf("  %-17s %lld rows\n", table, (long long)rows);
}

struct live {
	int64_t newest;
	char *name;
};

static void
instance_row(const char *name, int64_t started_at, int64_t heartbeat_at, const char *detail, void *arg)
{
	struct live *l = arg;
	(void)started_at;
	(void)detail;
	if (heartbeat_at > l->newest) {
		l->newest = heartbeat_at;
		free(l->name);
		l->name = xstrdup(name);
	}
}

/* sqlite:PATH names the data_dir, or the mailbridge.db in it. */
static char *
sqlite_dir(const char *from, char **error_r)
{
	struct stat sb;
	const char *path = from + strlen("sqlite:");
	char *dir, *db;

	if (strncmp(from, "sqlite:", 7) != 0 || !*path) {
		*error_r = xstrdup("--from sqlite:PATH (the data_dir, or its mailbridge.db)");
		return NULL;
	}
	if (stat(path, &sb) < 0) {
		*error_r = xasprintf("%s: %s", path, strerror(errno));
		return NULL;
	}
	if (S_ISDIR(sb.st_mode)) {
		dir = xstrdup(path);
	} else {
		const char *slash = strrchr(path, '/');
		dir = slash ? xasprintf("%.*s", (int)(slash - path), path) : xstrdup(".");
		if (!*dir) {
			free(dir);
			dir = xstrdup("/");
		}
	}
	db = xasprintf("%s/mailbridge.db", dir);
	if (stat(db, &sb) < 0) {
		*error_r = xasprintf("no store at %s", db);
		free(db);
		free(dir);
		return NULL;
	}
	free(db);
	return dir;
}

static int
store_migrate(const struct ctl_opts *o)
{
	struct store *from = NULL, *to = NULL;
	struct live live = { 0 };
	char *dir = NULL, *err = NULL;
	int r = 1;

	if (!o->from || !o->to) {
		fprintf(stderr, "mailbridge store migrate: --from sqlite:PATH --to postgresql://... (or a libpq "
		    "connection string)\n");
		return 2;
	}
	if (!(dir = sqlite_dir(o->from, &err)))
		goto out;
	/* brought to this binary's schema first, as a start would */
	if (!(from = store_open_conf(&(struct store_conf){ .backend = "sqlite", .data_dir = dir }, false, &err)))
		goto out;
	if (store_instance_list(from, instance_row, &live) < 0) {
		err = xstrdup("cannot read the SQLite store's instances");
		goto out;
	}
	if (live.name && now_ms() - live.newest < 60000) {
		err = xasprintf("mailbridge (%s) was running on this store %lld s ago: stop it first, copy, then start "
		    "it on PostgreSQL", live.name, (long long)((now_ms() - live.newest) / 1000));
		goto out;
	}
	if (!(to = store_open_conf(&(struct store_conf){ .backend = "postgresql", .dsn = o->to, .pool = 1 }, false,
	    &err)))
		goto out;
	printf("copying %s/mailbridge.db into PostgreSQL:\n", dir);
	if (store_copy(from, to, copied, NULL, &err) == 1) {
		printf("done. Now set [store] backend = postgresql and dsn (or dsn_file), and start mailbridge.\n");
		r = 0;
	}
out:
	if (err)
		fprintf(stderr, "mailbridge store migrate: %s\n", err);
	free(err);
	free(live.name);
	free(dir);
	store_close(to);
	store_close(from);
	return r;
}

int
ctl_store(const struct ctl_opts *o)
{
	if (o->argc >= 1 && strcmp(o->argv[0], "migrate") == 0)
		return store_migrate(o);
	fprintf(stderr, "usage: mailbridge store migrate --from sqlite:PATH --to postgresql://...\n");
	return 2;
}
