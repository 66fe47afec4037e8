// Package postgres opens taskledger's database: creating it when missing,
// and explaining what to do when it cannot be reached.
package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Open connects a pool to databaseURL, creating the database first when it
// does not exist and the role may create it.
func Open(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if err := ping(ctx, cfg); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
			return nil, unreachable(cfg, err)
		}
		if err := createDatabase(ctx, cfg); err != nil {
			return nil, err
		}
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, unreachable(cfg, err)
	}
	return pool, nil
}

func ping(ctx context.Context, cfg *pgxpool.Config) error {
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// createDatabase connects to the server's "postgres" database to create
// cfg's; a concurrent creation by another replica counts as success.
func createDatabase(ctx context.Context, cfg *pgxpool.Config) error {
	admin := cfg.ConnConfig.Copy()
	name := admin.Database
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return unreachable(cfg, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database
		return fmt.Errorf("database %q does not exist and could not be created (create it, or grant CREATEDB to %q): %w",
			name, admin.User, err)
	}
	return nil
}

func unreachable(cfg *pgxpool.Config, err error) error {
	c := cfg.ConnConfig
	return fmt.Errorf("cannot reach Postgres at %s:%d (database %q, user %q): %w; "+
		"start one (e.g. `docker compose up -d postgres`) or point TASKLEDGER_DATABASE_URL at a running server",
		c.Host, c.Port, c.Database, c.User, err)
}
