// Package config manages easconnector's TOML configuration file: it decodes
// it strictly (an unknown key is an error naming the key, its line and
// column), fills defaults first (Default), validates every field with a
// message naming the field path and its allowed values (Validate), reads
// secrets from environment variables or owner-only files, never from the
// file itself, into secret.String values that print and log as [REDACTED],
// and maps the result onto each package's Options (RunspaceOptions, …).
//
// TOML tags live only here: library packages take plain Options structs, so
// tests, benchmarks and the simulators build components without a file.
//
// Typical use:
//
//	cfg, err := config.Load("easconnector.toml") // decode + Validate
//	opts, err := cfg.RunspaceOptions()           // reads the password and CA file
//
// A Config is a plain value: safe to read concurrently, not to modify.
package config
