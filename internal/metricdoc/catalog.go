package metricdoc

// Family describes one metric family (the name before any labels; a
// histogram's _bucket, _sum and _count series belong to it).
type Family struct {
	Name string
	// Type is c (counter), g (gauge), h (histogram) or s (summary).
	Type string
	// Labels lists each label and its values, in Markdown ("" for none).
	Labels string
	// Help is the HELP line: what one series counts or measures and in
	// which unit. One line, no Markdown.
	Help string
	// Details adds to Help in docs/metrics.md (Markdown).
	Details string
	// Alert says what to alert on ("" for nothing).
	Alert string
}

// Section is one component's families in docs/metrics.md.
type Section struct {
	Title    string
	Families []Family
	// After is Markdown written after the section's table.
	After string
}

// Catalog lists every family, by component. The order is that of
// docs/metrics.md.
var Catalog = []Section{
	{Title: "Syncs (`pipeline`)", Families: []Family{
		{Name: "easconnector_sync_total", Type: "c",
			Labels: "`kind` (quick, full); `result` (ok, partial, held, degraded, failed, cancelled)",
			Help:   "Finished syncs, by kind and result (count of syncs).",
			Details: "`partial`: ran to the end, some mailbox writes failed; `held`: the blast-radius guard held the plan; " +
				"`degraded`: the MDM was unreadable or failed a sanity guard; `failed`: an infrastructure failure stopped it; " +
				"`cancelled`: shutdown. Dry runs (`plan`) are not counted.",
			Alert: "`failed`/`degraded` without an `ok` since"},
		{Name: "easconnector_sync_duration_seconds", Type: "h", Labels: "`kind`",
			Help:    "Wall time of a sync from start to result, in seconds.",
			Details: "Buckets 1 s … 4 h.",
			Alert:   "p95 of full approaching the quick interval or the next `full_at`"},
		{Name: "easconnector_sync_last_success_timestamp_seconds", Type: "g", Labels: "`kind`",
			Help:    "Unix time, in seconds, at which a sync of this kind last finished without an error (ok or partial); 0 until the first.",
			Details: "Starts from the state file's last success at start-up.",
			Alert:   "older than 26 h"},
		{Name: "easconnector_sync_devices", Type: "g", Labels: "`decision` (Allow, Block, Default, NoChange)",
			Help:    "EAS partnerships by the connector's decision at the last full sync without an error (count of devices).",
			Details: "Default: in neither list, so Exchange's device access rules and the organization's DefaultAccessLevel decide (see the [glossary](../README.md#glossary)).",
			Alert:   "sudden jumps in Block"},
		{Name: "easconnector_sync_devices_by_reason", Type: "g",
			Labels: "`reason` (Disabled, Exempt, NotTargeted, ScopeUnknown, InvalidDeviceId, Compliant, PlatformRule, NotCompliant, PendingEvaluation, Stale, UserMismatch, NotEnrolled, AdminOverride, PartnershipGone)",
			Help:   "EAS partnerships by decision-table reason at the last full sync without an error (count of devices).",
			Alert:  "growth of `UserMismatch`, `Stale`, `InvalidDeviceId`"},
		{Name: "easconnector_sync_list_entries_written_total", Type: "c", Labels: "`list` (allowed, blocked); `op` (add, remove)",
			Help: "Device ids added to or removed from ActiveSyncAllowedDeviceIDs/ActiveSyncBlockedDeviceIDs by successful writes (count of list entries).",
		},
		{Name: "easconnector_sync_mailbox_write_failures_total", Type: "c",
			Help:  "Mailboxes whose Set-CASMailbox failed after all attempts in a sync (count of mailboxes); they are retried next sync.",
			Alert: "more than a few per sync"},
		{Name: "easconnector_sync_guard_trips_total", Type: "c", Labels: "`guard` (mdm_missing, mdm_empty, mdm_shrunk, blast_radius)",
			Help:  "Syncs a guard stopped before any write, by guard (count of syncs).",
			Alert: "any increase"},
		{Name: "easconnector_sync_intent_commits_total", Type: "c",
			Help:    "Group commits of pending-write intents to the state file before their Set-CASMailbox calls (count of fsynced commits).",
			Details: "Several writes share one commit; the ratio to writes shows how well commits are grouped."},
		{Name: "easconnector_sync_recovered_writes_total", Type: "c",
			Help:    "Pending writes found at start-up (a crash or kill during a write) and reconciled against Exchange (count of mailbox writes).",
			Details: "Non-zero after an unclean stop; each is checked against the mailbox's lists and recorded in the audit log.",
			Alert:   "any increase (info: the service stopped uncleanly)"},
		{Name: "easconnector_sync_stage_duration_seconds", Type: "h", Labels: "`stage` (discover, join, decide, plan, guard, apply, notify, report, other)",
			Help:    "Time spent in each stage of a sync, in seconds.",
			Details: "Buckets 1 ms … 1 h."},
		{Name: "easconnector_sync_stage_items_total", Type: "c",
			Labels: "`stage`; `result` (per stage, from a fixed set: e.g. discover: devices, mailboxes; apply: ok, failed, not_started; guard: passed, held; notify: queued, resolved; quick join: new, attention, …; anything else is `other`)",
			Help:   "Items each stage handled, by stage and outcome (count of devices, mailboxes or messages as the stage handles).",
			Alert:  "`stage=\"apply\",result=\"not_started\"` > 0 (sync cut short)"},
		{Name: "easconnector_sync_stage_errors_total", Type: "c", Labels: "`stage`",
			Help:  "Sync stages that returned an error (count of stage runs).",
			Alert: "— (covered by `easconnector_sync_total`)"},
	}},
	{Title: "Scheduler (`pipeline/schedule`)", Families: []Family{
		{Name: "easconnector_schedule_runs_total", Type: "c", Labels: "`kind` (quick, full); `result` (ok, failed)",
			Help:  "Syncs the scheduler ran, by kind and whether they returned an error (count of syncs; a held plan counts as failed).",
			Alert: "— (use `easconnector_sync_total`)"},
		{Name: "easconnector_schedule_consecutive_failures", Type: "g",
			Help:  "Syncs in a row that returned an error (count; 0 after a success).",
			Alert: "≥ 2"},
		{Name: "easconnector_schedule_running", Type: "g",
			Help:  "1 while a sync runs, else 0.",
			Alert: "stuck at 1 for longer than a full sync takes"},
		{Name: "easconnector_schedule_triggers_total", Type: "c", Labels: "`coalesced` (true, false)",
			Help: "Manual sync requests (count); coalesced=true: folded into a sync already pending."},
		{Name: "easconnector_schedule_next_quick_timestamp_seconds", Type: "g",
			Help:  "Unix time, in seconds, of the next scheduled quick sync.",
			Alert: "in the past by more than the quick interval"},
		{Name: "easconnector_schedule_next_full_timestamp_seconds", Type: "g",
			Help: "Unix time, in seconds, of the next scheduled full sync."},
	}},
	{Title: "Exchange sessions (`runspace`)", Families: []Family{
		{Name: "easconnector_runspace_sessions", Type: "g", Labels: "`state` (busy, idle)",
			Help: "Open remote PowerShell sessions, running a cmdlet (busy) or waiting (idle) (count of sessions)."},
		{Name: "easconnector_runspace_limit", Type: "g",
			Help:    "Current adaptive session limit, 1 to the configured runspaces (count of sessions).",
			Details: "Halved on each quota error, grown back after quiet periods.",
			Alert:   "below `runspaces` for hours"},
		{Name: "easconnector_runspace_session_opens_total", Type: "c",
			Help:  "Sessions opened: at start, as replacements and when recycled (count of sessions).",
			Alert: "a rate far above `runspaces` per `max_session_age` (churn)"},
		{Name: "easconnector_runspace_session_failures_total", Type: "c", Labels: "`class` (see below)",
			Help:  "Sessions that broke and were replaced, by error class (count of sessions).",
			Alert: "sustained rate"},
		{Name: "easconnector_runspace_request_duration_seconds", Type: "h", Labels: "`cmdlet` (the allowlisted cmdlets, or `other`)",
			Help:    "Time of one attempt of one cmdlet, from sending the request to its end with all output streamed, in seconds.",
			Details: "Buckets 5 ms … 10 s.",
			Alert:   "p95 of `Set-CASMailbox` above 2 s"},
		{Name: "easconnector_runspace_errors_total", Type: "c", Labels: "`cmdlet`; `class`",
			Help:  "Cmdlet calls that failed after retries, by cmdlet and error class (count of calls).",
			Alert: "`cmdlet=\"Set-CASMailbox\"` (see mailbox write failures)"},
		{Name: "easconnector_runspace_throttle_events_total", Type: "c",
			Help:  "Quota errors from Exchange or WinRM: concurrent shells, cmdlet rate, budget, WinRM shells or operations (count of errors).",
			Alert: "more than ~10 per hour"},
		{Name: "easconnector_runspace_endpoint_up", Type: "g", Labels: "`server` (configured and discovered Exchange servers)",
			Help:  "1 when the Exchange server is in rotation, 0 while it is marked down or being probed.",
			Alert: "0 for 15 min; all 0"},
		{Name: "easconnector_runspace_failovers_total", Type: "c",
			Help:  "New sessions that had to open on a server further down the list than the previous one (count of sessions).",
			Alert: "any increase (info)"},
	}, After: "Error classes (`class`): `throttle`, `auth`, `tls`, `timeout`, `transport`,\n" +
		"`fault` (a WinRM fault), `remote` (the cmdlet itself failed: Exchange's\n" +
		"error), `init` (Exchange could not be loaded), `canceled`, `protocol`,\n" +
		"`invalid` (refused before sending), `closed`, `other`.\n"},
	{Title: "Microsoft Graph (`mdm`, `source = \"graph\"`)", Families: []Family{
		{Name: "easconnector_mdm_requests_total", Type: "c",
			Labels: "`endpoint` (token, managedDevices, transitiveMembers, other); `status` (HTTP status code, or `error` when no answer came)",
			Help:   "Requests to Entra ID and Microsoft Graph, each attempt, by endpoint and HTTP status (count of requests).",
			Alert:  "non-2xx other than 429"},
		{Name: "easconnector_mdm_request_duration_seconds", Type: "h", Labels: "`endpoint`",
			Help:    "Time from sending a Graph or token request to its response headers, in seconds.",
			Details: "Default buckets 5 ms … 10 s."},
		{Name: "easconnector_mdm_retries_total", Type: "c",
			Help: "Graph requests retried after 429, 5xx or a network error (count of retries)."},
		{Name: "easconnector_mdm_records", Type: "g",
			Help:  "Managed devices in the last complete MDM snapshot (count of records).",
			Alert: "sudden drops (the guard acts too)"},
	}},
	{Title: "Notifications (`pipeline/notify`)", Families: []Family{
		{Name: "easconnector_notify_queued_total", Type: "c", Labels: "`kind` (notice, digest)",
			Help: "Mails queued: notices to users, digests to administrators (count of messages)."},
		{Name: "easconnector_notify_sent_total", Type: "c", Labels: "`kind`",
			Help: "Mails the SMTP server accepted (count of messages)."},
		{Name: "easconnector_notify_failed_total", Type: "c", Labels: "`kind`",
			Help:  "Mails given up after retries (count of messages).",
			Alert: "any increase"},
		{Name: "easconnector_notify_dropped_total", Type: "c", Labels: "`kind`",
			Help:    "Mails dropped because the queue was full or the service stopped (count of messages).",
			Details: "Derived again by a later sync.",
			Alert:   "any increase"},
		{Name: "easconnector_notify_retries_total", Type: "c",
			Help: "SMTP deliveries retried after a transient error (count of retries)."},
		{Name: "easconnector_notify_queue_length", Type: "g",
			Help: "Mails waiting to be sent (count of messages)."},
	}},
	{Title: "Caches (`cache`)", Families: []Family{
		{Name: "easconnector_cache_hits_total", Type: "c", Labels: "`cache` (mailbox, fingerprint)",
			Help: "Cache lookups that found a usable entry (count of lookups)."},
		{Name: "easconnector_cache_misses_total", Type: "c", Labels: "`cache`",
			Help: "Cache lookups that found no entry or one too old (count of lookups)."},
		{Name: "easconnector_cache_evictions_total", Type: "c", Labels: "`cache`",
			Help: "Cache entries evicted to make room (count of entries)."},
		{Name: "easconnector_cache_rejections_total", Type: "c", Labels: "`cache`",
			Help: "Cache entries refused: admission policy, full buffer or cache disabled (count of entries)."},
	}, After: "A cache miss only costs a read; a low hit rate makes quick syncs read more\n" +
		"from Exchange, never decide differently.\n"},
	{Title: "Admin HTTP (`server`)", Families: []Family{
		{Name: "easconnector_server_requests_total", Type: "c",
			Labels: "`handler` (page, glossary, signin, metrics, healthz, readyz, status, syncs, devices, device, trends, plan, approve, other); `code` (2xx, 3xx, 4xx, 5xx)",
			Help:   "Admin HTTP requests, by handler and status class (count of requests).",
			Alert:  "`5xx`"},
		{Name: "easconnector_server_auth_failures_total", Type: "c",
			Help:  "Requests refused for a missing or wrong token, or a POST with the read-only token (count of requests).",
			Alert: "any increase (someone is guessing)"},
	}},
	{Title: "Go runtime and process (`server`, with process metrics on)", Families: goProcess, After: "These come from VictoriaMetrics/metrics (`WriteProcessMetrics`); the\n" +
		"`process_io_*`, `process_pressure_*` and `process_cgroup_*` series exist\n" +
		"on Linux only.\n"},
}

// goProcess are the series metrics.WriteProcessMetrics writes
// (VictoriaMetrics/metrics v1.45 go_metrics.go and process_metrics_linux.go).
var goProcess = []Family{
	{Name: "go_sched_latencies_seconds", Type: "h", Help: "Time goroutines spent runnable before running, in seconds."},
	{Name: "go_mutex_wait_seconds_total", Type: "c", Help: "Time goroutines spent blocked on a sync.Mutex or RWMutex, in seconds."},
	{Name: "go_gc_mark_assist_cpu_seconds_total", Type: "c", Help: "CPU time goroutines spent assisting the garbage collector, in seconds."},
	{Name: "go_gc_cpu_seconds_total", Type: "c", Help: "CPU time spent in the garbage collector, in seconds."},
	{Name: "go_gc_pauses_seconds", Type: "h", Help: "Stop-the-world pauses of the garbage collector, in seconds."},
	{Name: "go_scavenge_cpu_seconds_total", Type: "c", Help: "CPU time spent returning memory to the operating system, in seconds."},
	{Name: "go_memlimit_bytes", Type: "g", Help: "The Go memory limit (GOMEMLIMIT), in bytes."},
	{Name: "go_memstats_alloc_bytes", Type: "g", Help: "Heap memory allocated and not yet freed, in bytes."},
	{Name: "go_memstats_alloc_bytes_total", Type: "c", Help: "Heap memory allocated since start, in bytes."},
	{Name: "go_memstats_buck_hash_sys_bytes", Type: "g", Help: "Memory of the profiling bucket hash table, in bytes."},
	{Name: "go_memstats_frees_total", Type: "c", Help: "Heap objects freed since start (count)."},
	{Name: "go_memstats_gc_cpu_fraction", Type: "g", Help: "Share of the CPU time since start used by the garbage collector (0 to 1)."},
	{Name: "go_memstats_gc_sys_bytes", Type: "g", Help: "Memory of the garbage collector's metadata, in bytes."},
	{Name: "go_memstats_heap_alloc_bytes", Type: "g", Help: "Heap memory in allocated objects, in bytes."},
	{Name: "go_memstats_heap_idle_bytes", Type: "g", Help: "Heap memory in idle spans, in bytes."},
	{Name: "go_memstats_heap_inuse_bytes", Type: "g", Help: "Heap memory in spans in use, in bytes."},
	{Name: "go_memstats_heap_objects", Type: "g", Help: "Allocated heap objects (count)."},
	{Name: "go_memstats_heap_released_bytes", Type: "g", Help: "Heap memory returned to the operating system, in bytes."},
	{Name: "go_memstats_heap_sys_bytes", Type: "g", Help: "Heap memory obtained from the operating system, in bytes."},
	{Name: "go_memstats_last_gc_time_seconds", Type: "g", Help: "Unix time, in seconds, at which the last garbage collection finished."},
	{Name: "go_memstats_lookups_total", Type: "c", Help: "Pointer lookups by the runtime (count)."},
	{Name: "go_memstats_mallocs_total", Type: "c", Help: "Heap objects allocated since start (count)."},
	{Name: "go_memstats_mcache_inuse_bytes", Type: "g", Help: "Memory of mcache structures in use, in bytes."},
	{Name: "go_memstats_mcache_sys_bytes", Type: "g", Help: "Memory obtained for mcache structures, in bytes."},
	{Name: "go_memstats_mspan_inuse_bytes", Type: "g", Help: "Memory of mspan structures in use, in bytes."},
	{Name: "go_memstats_mspan_sys_bytes", Type: "g", Help: "Memory obtained for mspan structures, in bytes."},
	{Name: "go_memstats_next_gc_bytes", Type: "g", Help: "Heap size at which the next garbage collection starts, in bytes."},
	{Name: "go_memstats_other_sys_bytes", Type: "g", Help: "Other runtime memory obtained from the operating system, in bytes."},
	{Name: "go_memstats_stack_inuse_bytes", Type: "g", Help: "Memory of goroutine stacks in use, in bytes."},
	{Name: "go_memstats_stack_sys_bytes", Type: "g", Help: "Memory obtained for goroutine stacks, in bytes."},
	{Name: "go_memstats_sys_bytes", Type: "g", Help: "Memory obtained from the operating system in all, in bytes."},
	{Name: "go_cgo_calls_count", Type: "c", Help: "Calls from Go to C since start (count)."},
	{Name: "go_cpu_count", Type: "g", Help: "Logical CPUs usable by the process (count)."},
	{Name: "go_gc_duration_seconds", Type: "s", Help: "Stop-the-world pause of each garbage collection, in seconds (quantiles)."},
	{Name: "go_gc_forced_count", Type: "c", Help: "Garbage collections forced by the application (count)."},
	{Name: "go_gomaxprocs", Type: "g", Help: "GOMAXPROCS: OS threads that run Go code at once (count)."},
	{Name: "go_goroutines", Type: "g", Help: "Goroutines that exist (count)."},
	{Name: "go_threads", Type: "g", Help: "OS threads the Go runtime created (count)."},
	{Name: "go_info", Type: "g", Help: "Always 1; the label version is the Go version the binary was built with."},
	{Name: "go_info_ext", Type: "g", Help: "Always 1; the labels carry the compiler and GOOS/GOARCH."},
	{Name: "process_cpu_seconds_system_total", Type: "c", Help: "CPU time of the process in the kernel, in seconds."},
	{Name: "process_cpu_seconds_total", Type: "c", Help: "CPU time of the process, user and kernel, in seconds."},
	{Name: "process_cpu_seconds_user_total", Type: "c", Help: "CPU time of the process in user space, in seconds."},
	{Name: "process_major_pagefaults_total", Type: "c", Help: "Page faults that needed a disk read (count)."},
	{Name: "process_minor_pagefaults_total", Type: "c", Help: "Page faults served without a disk read (count)."},
	{Name: "process_num_threads", Type: "g", Help: "OS threads of the process (count)."},
	{Name: "process_resident_memory_bytes", Type: "g", Help: "Resident memory of the process, in bytes."},
	{Name: "process_start_time_seconds", Type: "g", Help: "Unix time, in seconds, at which the process started."},
	{Name: "process_virtual_memory_bytes", Type: "g", Help: "Virtual memory of the process, in bytes."},
	{Name: "process_virtual_memory_peak_bytes", Type: "g", Help: "Peak virtual memory of the process, in bytes."},
	{Name: "process_resident_memory_peak_bytes", Type: "g", Help: "Peak resident memory of the process, in bytes."},
	{Name: "process_resident_memory_anon_bytes", Type: "g", Help: "Resident anonymous memory (heap, stacks), in bytes."},
	{Name: "process_resident_memory_file_bytes", Type: "g", Help: "Resident memory mapped from files, in bytes."},
	{Name: "process_resident_memory_shared_bytes", Type: "g", Help: "Resident shared memory, in bytes."},
	{Name: "process_io_read_bytes_total", Type: "g", Help: "Data the process read through system calls, from any source, in bytes."},
	{Name: "process_io_written_bytes_total", Type: "g", Help: "Data the process wrote through system calls, to any target, in bytes."},
	{Name: "process_io_read_syscalls_total", Type: "g", Help: "Read system calls of the process (count)."},
	{Name: "process_io_write_syscalls_total", Type: "g", Help: "Write system calls of the process (count)."},
	{Name: "process_io_storage_read_bytes_total", Type: "g", Help: "Data the process caused to be read from storage, in bytes."},
	{Name: "process_io_storage_written_bytes_total", Type: "g", Help: "Data the process caused to be written to storage, in bytes."},
	{Name: "process_pressure_cpu_waiting_seconds_total", Type: "c", Help: "Time some of the cgroup's tasks waited for a CPU (PSI some), in seconds."},
	{Name: "process_pressure_cpu_stalled_seconds_total", Type: "c", Help: "Time all of the cgroup's tasks waited for a CPU (PSI full), in seconds."},
	{Name: "process_pressure_io_waiting_seconds_total", Type: "c", Help: "Time some of the cgroup's tasks waited for I/O (PSI some), in seconds."},
	{Name: "process_pressure_io_stalled_seconds_total", Type: "c", Help: "Time all of the cgroup's tasks waited for I/O (PSI full), in seconds."},
	{Name: "process_pressure_memory_waiting_seconds_total", Type: "c", Help: "Time some of the cgroup's tasks waited for memory (PSI some), in seconds."},
	{Name: "process_pressure_memory_stalled_seconds_total", Type: "c", Help: "Time all of the cgroup's tasks waited for memory (PSI full), in seconds."},
	{Name: "process_cgroup_cpu_throttled_seconds_total", Type: "c", Help: "Time the cgroup's CPU quota throttled the process, in seconds."},
}
