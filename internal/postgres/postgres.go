// Package postgres opens taskledger's database: creating it when missing
// for the commands that write, never for those that only read, and telling
// apart a server that is not there, one that refuses the role, and a
// database that is not migrated.
package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"github.com/taskledger/taskledger/migrations"
)

var (
	// ErrUnreachable: no Postgres server answered.
	ErrUnreachable = errors.New("cannot reach Postgres")
	// ErrAuth: the server answered and refused the role or its password.
	ErrAuth = errors.New("the server refused the login")
	// ErrNotMigrated: the database does not exist or lacks migrations.
	ErrNotMigrated = errors.New("not migrated: run `taskledger migrate up`")
)

// Open connects a pool to databaseURL, creating the database first when it
// does not exist and the role may create it; it logs the creation.
func Open(ctx context.Context, databaseURL string, log zerolog.Logger) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if err := ping(ctx, cfg.ConnConfig); err != nil {
		if !isCode(err, pgerrcode.InvalidCatalogName) {
			return nil, explain(cfg.ConnConfig, err)
		}
		if err := createDatabase(ctx, cfg.ConnConfig); err != nil {
			return nil, err
		}
		log.Info().Str("database", cfg.ConnConfig.Database).Str("host", cfg.ConnConfig.Host).Msg("database created")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, explain(cfg.ConnConfig, err)
	}
	return pool, nil
}

// OpenMigrated connects a pool to databaseURL for commands that only read:
// it creates nothing, and fails with ErrNotMigrated unless the database
// exists with every embedded migration applied.
func OpenMigrated(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("parse database URL: %w", err)
	}
	if err := ping(ctx, cfg.ConnConfig); err != nil {
		if isCode(err, pgerrcode.InvalidCatalogName) {
			return nil, fmt.Errorf("database %q does not exist: %w", cfg.ConnConfig.Database, ErrNotMigrated)
		}
		return nil, explain(cfg.ConnConfig, err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, explain(cfg.ConnConfig, err)
	}
	version, dirty, err := migrations.Version(ctx, pool)
	if err == nil && (dirty || version != migrations.Latest()) {
		err = fmt.Errorf("database %q is at schema version %d (dirty=%v), want %d: %w",
			cfg.ConnConfig.Database, version, dirty, migrations.Latest(), ErrNotMigrated)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func ping(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// createDatabase connects to the server's "postgres" database to create
// cfg's; a concurrent creation by another replica counts as success.
func createDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	admin := cfg.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return explain(cfg, err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if err != nil && !isCode(err, pgerrcode.DuplicateDatabase) {
		return fmt.Errorf("database %q does not exist and could not be created (create it, or grant CREATEDB to %q): %w",
			cfg.Database, cfg.User, err)
	}
	return nil
}

// explain wraps a connection failure in ErrAuth when the server refused the
// login, and in ErrUnreachable otherwise, naming the address and role.
func explain(cfg *pgx.ConnConfig, err error) error {
	kind := ErrUnreachable
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgerrcode.IsInvalidAuthorizationSpecification(pgErr.Code) {
		kind = ErrAuth
	}
	return fmt.Errorf("%w at %s:%d (database %q, user %q): %w", kind, cfg.Host, cfg.Port, cfg.Database, cfg.User, err)
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
