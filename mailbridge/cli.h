/* cli: what the binary's commands share (main.c, daemon.c, ctl.c), and
 * their entry points. Only those three include it: the modules the
 * daemon runs see struct app (app.h) and nothing of how it is opened. */
#ifndef MB_CLI_H
#define MB_CLI_H

#include <stdbool.h>
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

/* The administrator's commands (ctl.c), as `mailbridge COMMAND`. */
int ctl_check_config(const char *path, bool quiet);
int ctl_queue(const char *path, int argc, char **argv);
int ctl_inbound(const char *path, int argc, char **argv);
int ctl_call_log(const char *path, const char *location, const char *direction, const char *from, const char *to,
    const char *status, const char *recording);
int ctl_trace(const char *path, int argc, char **argv);
int ctl_send_test(const char *path, const char *location, const char *to);
int ctl_accounts(const char *path);
int ctl_backup(const char *path, int argc, char **argv);

#endif
