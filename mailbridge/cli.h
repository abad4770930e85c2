/* cli: what the binary's commands share (main.c, daemon.c, ctl.c), and
 * their entry points. Only those three include it: the modules the
 * daemon runs see struct app (app.h) and nothing of how it is opened. */
#ifndef MB_CLI_H
#define MB_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct app;
struct config;

/* The configuration at path (errors printed to stderr), its log level
 * applied; NULL when it has errors. */
struct config *app_load_config(const char *path);
/* The configuration, the store and the store's keys: 0, or -1 (printed). */
int app_open(struct app *app, const char *path);
/* The same for commands that only read: the store is opened read-only
 * (store_open_readonly), never created nor migrated. */
int app_open_readonly(struct app *app, const char *path);
/* The HighLevel client, and OAuth as its token source when client_id is
 * set (after app_open). */
void app_open_highlevel(struct app *app);
/* Frees whatever of the app is set. */
void app_close(struct app *app);

/* main.c: the usage text, and the process-wide library teardown (before
 * a reload's re-exec). */
void main_usage(FILE *out);
void main_lib_deinit(void);

/* The daemon (daemon.c): serves until SIGTERM; argv for a reload's re-exec. */
int daemon_serve(const char *path, char **argv);

/* The command line of an administrator's command, as main.c parsed it:
 * the options, and the words after the command (argv[0] is its first). */
struct ctl_opts {
	const char *path;          /* -c */
	const char *location, *to, *from, *direction, *status, *recording;
	const char *state;         /* --state */
	const char *older_than;    /* --older-than DURATION (30m, 2h, 7d) */
	bool quiet;                /* -q */
	bool non_default;          /* -n */
	const char *keys;          /* --keys[=man]: "" or "man"; NULL when not given */
	bool json;                 /* --json */
	bool all_failed;           /* --all-failed */
	int argc;
	char **argv;
};

/* The administrator's commands, as `mailbridge COMMAND`: 0 done, 1 failed,
 * 2 usage, 75 try again later (EX_TEMPFAIL). ctl.c, ctl_queue.c. */
int ctl_check_config(const struct ctl_opts *o);
int ctl_queue(const struct ctl_opts *o);
int ctl_inbound(const struct ctl_opts *o);
int ctl_call_log(const struct ctl_opts *o);
int ctl_trace(const struct ctl_opts *o);
int ctl_send_test(const struct ctl_opts *o);
int ctl_accounts(const struct ctl_opts *o);
int ctl_backup(const struct ctl_opts *o);
int ctl_doctor(const struct ctl_opts *o);
int ctl_store(const struct ctl_opts *o);

/* Shared by the ctl files: a JSON document on stdout (--json). */
typedef struct json_t json_t;
void ctl_print_json(json_t *v);
/* doctor's verdicts */
enum ctl_level { CTL_OK, CTL_WARN, CTL_FAIL };

#endif
