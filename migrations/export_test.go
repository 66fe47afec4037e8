package migrations

import (
	"errors"

	"github.com/golang-migrate/migrate/v4"
	"github.com/jackc/pgx/v5/pgxpool"
)

// To migrates the database up or down to version, for tests of one
// migration against the data of the one before.
func To(pool *pgxpool.Pool, version uint) error {
	m, err := open(pool)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Migrate(version); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return err
	}
	return nil
}
