/* namespace.h - link-time names of the library's internal symbols.
 *
 * Every non-static function or variable of the library that is not API gets
 * the dbpool__ prefix in the object files (libuv's uv__, libpq's pq), so a
 * static libdbpool.a never collides with an application's own plog() or
 * pool_open(). The source keeps the short names; this header, included by
 * every internal header, maps them. The CTest lib_internal_names checks
 * that nothing unprefixed is left. */
#ifndef DBPOOL_NAMESPACE_H
#define DBPOOL_NAMESPACE_H

#define aimd_due dbpool__aimd_due
#define aimd_init dbpool__aimd_init
#define aimd_refused dbpool__aimd_refused
#define aimd_tick dbpool__aimd_tick
#define alloc_set dbpool__alloc_set
#define async_complete_locked dbpool__async_complete_locked
#define async_take_head dbpool__async_take_head
#define backoff_init dbpool__backoff_init
#define backoff_next dbpool__backoff_next
#define backoff_reset dbpool__backoff_reset
#define clear_error dbpool__clear_error
#define clock_anchor dbpool__clock_anchor
#define clock_us_slow dbpool__clock_us_slow
#define codel_checkin dbpool__codel_checkin
#define codel_init dbpool__codel_init
#define codel_mark_busy dbpool__codel_mark_busy
#define codel_poll dbpool__codel_poll
#define codel_take dbpool__codel_take
#define config_option dbpool__config_option
#define config_validate dbpool__config_validate
#define hist_add dbpool__hist_add
#define hist_count_below_pow2 dbpool__hist_count_below_pow2
#define hist_quantile dbpool__hist_quantile
#define hist_summary dbpool__hist_summary
#define idle_advance dbpool__idle_advance
#define idle_init dbpool__idle_init
#define log_msg dbpool__log_msg
#define manager_attach dbpool__manager_attach
#define manager_detach dbpool__manager_detach
#define manager_fork_gen dbpool__manager_fork_gen
#define manager_in_use dbpool__manager_in_use
#define manager_is_self dbpool__manager_is_self
#define manager_poke dbpool__manager_poke
#define manager_poke_before dbpool__manager_poke_before
#define manager_release dbpool__manager_release
#define manager_unwatch dbpool__manager_unwatch
#define manager_watch dbpool__manager_watch
#define pg_cancel_target dbpool__pg_cancel_target
#define pg_conn_resets dbpool__pg_conn_resets
#define pg_conn_id dbpool__pg_conn_id
#define pg_needs_lookup dbpool__pg_needs_lookup
#define pg_one_line dbpool__pg_one_line
#define pg_open dbpool__pg_open
#define pg_parse_conninfo dbpool__pg_parse_conninfo
#define pg_resolve dbpool__pg_resolve
#define pg_resolved_credentials dbpool__pg_resolved_credentials
#define pg_resolved_free dbpool__pg_resolved_free
#define pg_resolved_plain dbpool__pg_resolved_plain
#define pg_set_msg dbpool__pg_set_msg
#define plog dbpool__plog
#define pool_abandon dbpool__pool_abandon
#define pool_async_service_locked dbpool__pool_async_service_locked
#define pool_birth_locked dbpool__pool_birth_locked
#define pool_checkin dbpool__pool_checkin
#define pool_close dbpool__pool_close
#define pool_deliver_events dbpool__pool_deliver_events
#define pool_event_locked dbpool__pool_event_locked
#define pool_fail_waiters_locked dbpool__pool_fail_waiters_locked
#define pool_forked dbpool__pool_forked
#define pool_free dbpool__pool_free
#define pool_hists_copy dbpool__pool_hists_copy
#define pool_last_out_locked dbpool__pool_last_out_locked
#define pool_lease_doom dbpool__pool_lease_doom
#define pool_lease_user dbpool__pool_lease_user
#define pool_open dbpool__pool_open
#define pool_open_conns dbpool__pool_open_conns
#define pool_ready_wake_locked dbpool__pool_ready_wake_locked
#define pool_release_locked dbpool__pool_release_locked
#define pool_signal_dropped dbpool__pool_signal_dropped
#define pool_submit_async_locked dbpool__pool_submit_async_locked
#define pool_update_state_locked dbpool__pool_update_state_locked
#define pool_wait_message dbpool__pool_wait_message
#define pool_withdraw_locked dbpool__pool_withdraw_locked
#define rng_range dbpool__rng_range
#define set_error_msg dbpool__set_error_msg
#define slot_disconnect dbpool__slot_disconnect
#define slot_io dbpool__slot_io
#define slot_move dbpool__slot_move
#define slot_service dbpool__slot_service
#define stmt_free dbpool__stmt_free
#define stmtcache_add dbpool__stmtcache_add
#define stmtcache_clear dbpool__stmtcache_clear
#define stmtcache_forget dbpool__stmtcache_forget
#define stmtcache_get dbpool__stmtcache_get
#define stmtcache_hash dbpool__stmtcache_hash
#define stmtcache_init dbpool__stmtcache_init
#define stmtcache_new dbpool__stmtcache_new
#define stmtcache_oldest dbpool__stmtcache_oldest
#define workers_atfork_child dbpool__workers_atfork_child
#define workers_atfork_parent dbpool__workers_atfork_parent
#define workers_atfork_prepare dbpool__workers_atfork_prepare
#define workers_busy dbpool__workers_busy
#define workers_submit dbpool__workers_submit
#define workers_trim dbpool__workers_trim
#define wq_init dbpool__wq_init
#define wq_push dbpool__wq_push
#define wq_remove dbpool__wq_remove
#define mem_malloc dbpool__mem_malloc
#define mem_calloc dbpool__mem_calloc
#define mem_free dbpool__mem_free
#define mem_strdup dbpool__mem_strdup
#define pg_pool_is_pg dbpool__pg_pool_is_pg
#define pool_checkout_direct dbpool__pool_checkout_direct
#define pool_lease_hold dbpool__pool_lease_hold
#define sandbox_checkin dbpool__sandbox_checkin
#define sandbox_checkout dbpool__sandbox_checkout
#define sandbox_enable dbpool__sandbox_enable
#define sandbox_free dbpool__sandbox_free
#define sandbox_queued dbpool__sandbox_queued

/* the statement engine shared by src/pg/pg_query.c and pg_async.c; posting
 * to a completion queue from library threads (src/core/async.c) */
#define async_post dbpool__async_post
#define async_hold dbpool__async_hold
#define async_unhold dbpool__async_unhold
#define pgq_opts_get dbpool__pgq_opts_get
#define pgq_call_init dbpool__pgq_call_init
#define pgq_arm dbpool__pgq_arm
#define pgq_call_end dbpool__pgq_call_end
#define pgq_send dbpool__pgq_send
#define pgq_keep dbpool__pgq_keep
#define pgq_classify dbpool__pgq_classify
#define pgq_timed_out dbpool__pgq_timed_out
#define pgq_received dbpool__pgq_received
#define pgq_outcome dbpool__pgq_outcome
#define pgq_stale_statement dbpool__pgq_stale_statement
#define pgq_drain_sql dbpool__pgq_drain_sql
#define pgq_exec_begin dbpool__pgq_exec_begin
#define pgq_exec_end dbpool__pgq_exec_end
#define pgq_give_back dbpool__pgq_give_back
#define pgq_dead_retry_limit dbpool__pgq_dead_retry_limit
#define pgq_bad_params dbpool__pgq_bad_params
#define pgq_poison dbpool__pgq_poison
#define pgq_res_field dbpool__pgq_res_field
#define pgq_conn_msg dbpool__pgq_conn_msg
#define pgq_probe_dead dbpool__pgq_probe_dead
#define pgq_found_dead dbpool__pgq_found_dead
#define pgq_answered dbpool__pgq_answered

#endif
