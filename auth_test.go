package wsauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestContext(t *testing.T) {
	_, ok := FromContext(context.Background())
	assert.False(t, ok)

	_, ok = FromContext(NewContext(context.Background(), nil))
	assert.False(t, ok, "a nil identity is no identity")

	id := &Identity{Kind: KindPlugin, Subject: "telegram", Name: "telegram"}
	got, ok := FromContext(NewContext(context.Background(), id))
	assert.True(t, ok)
	assert.Same(t, id, got)

	// Another package's value under a look-alike key does not collide.
	type otherKey struct{}
	ctx := context.WithValue(context.Background(), otherKey{}, id)
	_, ok = FromContext(ctx)
	assert.False(t, ok)
}

func TestStatusCode(t *testing.T) {
	for err, want := range map[error]int{
		ErrNoCredentials:        http.StatusUnauthorized,
		ErrInvalidCredentials:   http.StatusUnauthorized,
		ErrAmbiguousCredentials: http.StatusBadRequest,
		ErrForbiddenOrigin:      http.StatusForbidden,
		ErrThrottled:            http.StatusTooManyRequests,
		ErrUnavailable:          http.StatusServiceUnavailable,
		ErrInternal:             http.StatusInternalServerError,
		errors.New("other"):     http.StatusInternalServerError,
		fmt.Errorf("wrapped: %w", ErrForbiddenOrigin):                                http.StatusForbidden,
		&RetryError{Err: fmt.Errorf("%w: down", ErrUnavailable), After: time.Second}: http.StatusServiceUnavailable,
	} {
		assert.Equal(t, want, StatusCode(err), "%v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	_, ok := RetryAfter(ErrInvalidCredentials)
	assert.False(t, ok)
	err := fmt.Errorf("ctx: %w", &RetryError{Err: ErrThrottled, After: 3 * time.Second})
	d, ok := RetryAfter(err)
	assert.True(t, ok)
	assert.Equal(t, 3*time.Second, d)
	assert.ErrorIs(t, err, ErrThrottled)
	assert.Equal(t, ErrThrottled.Error(), (&RetryError{Err: ErrThrottled}).Error())
}

func TestErrorsHavePackagePrefix(t *testing.T) {
	for _, err := range []error{ErrNoCredentials, ErrInvalidCredentials, ErrAmbiguousCredentials,
		ErrForbiddenOrigin, ErrUnavailable, ErrThrottled, ErrInternal} {
		assert.Regexp(t, "^wsauth: ", err.Error())
	}
}
