/* stub_driver.c - the stub driver of stub_driver.h. */
#include "stub_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int stub_conn;
static int stub_token;

static int stub_connect_start(void *ctx, void **conn, int *fd, char *err, size_t errlen)
{
    struct stub_ctl *c = ctx;

    *fd = -1;
    if (c && atomic_load(&c->fail_connects)) {
        *conn = NULL;
        snprintf(err, errlen, "stub");
        return DBPOOL_IO_FAIL;
    }
    if (c)
        atomic_fetch_add(&c->connects, 1);
    *conn = &stub_conn;
    return DBPOOL_IO_DONE;
}

static int stub_step(void *ctx, void *conn, int *fd, char *err, size_t errlen)
{
    (void)ctx;
    (void)conn;
    (void)fd;
    (void)err;
    (void)errlen;
    return DBPOOL_IO_DONE;
}

static int stub_reset(void *ctx, void *conn, int64_t timeout_ms, char *err, size_t errlen)
{
    (void)ctx;
    (void)conn;
    (void)timeout_ms;
    (void)err;
    (void)errlen;
    return 0;
}

static void stub_disconnect(void *ctx, void *conn)
{
    struct stub_ctl *c = ctx;

    if (conn != &stub_conn)
        abort();
    if (c)
        atomic_fetch_add(&c->disconnects, 1);
}

/* The token is the ctl (or the static token without one). */
static void *stub_cancel_prepare(void *ctx, void *conn)
{
    (void)conn;
    return ctx ? ctx : &stub_token;
}

static void stub_cancel_run(void *token)
{
    if (token == &stub_token)
        return;
    struct stub_ctl *c = token;
    int ms = atomic_load(&c->cancel_sleep_ms);
    if (ms) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    atomic_fetch_add(&c->cancel_runs, 1);
}

static void stub_cancel_free(void *token)
{
    if (token != &stub_token)
        atomic_fetch_add(&((struct stub_ctl *)token)->cancel_frees, 1);
}

const dbpool_driver stub_driver = {
    .name = "stub",
    .connect_start = stub_connect_start,
    .connect_poll = stub_step,
    .ping_start = stub_step,
    .ping_poll = stub_step,
    .reset = stub_reset,
    .cancel_prepare = stub_cancel_prepare,
    .cancel_run = stub_cancel_run,
    .cancel_free = stub_cancel_free,
    .disconnect = stub_disconnect,
};
