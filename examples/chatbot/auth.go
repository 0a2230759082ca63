package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/memload/memload/openai"
)

// minKeyLen is the shortest API key accepted: a guessable key on a public
// URL is no protection.
const minKeyLen = 16

// fetchAPIKey reads the API key that AUTH_TYPE=NONE requires, from SSM
// Parameter Store or Secrets Manager, with the function's own credentials.
// (AWS_ENDPOINT_URL_SSM and AWS_ENDPOINT_URL_SECRETS_MANAGER point the
// clients elsewhere, as the AWS SDK does for every service.)
func fetchAPIKey(ctx context.Context, cfg config) (string, error) {
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, cfg.awsOptions...)
	if err != nil {
		return "", fmt.Errorf("AWS configuration for the API key: %w", err)
	}
	var key, source string
	switch {
	case cfg.APIKeyParameter != "":
		source = "SSM parameter " + cfg.APIKeyParameter + " (API_KEY_PARAMETER)"
		out, err := ssm.NewFromConfig(awsCfg).GetParameter(ctx, &ssm.GetParameterInput{
			Name: aws.String(cfg.APIKeyParameter), WithDecryption: aws.Bool(true)})
		if err != nil {
			return "", fmt.Errorf("reading the API key from %s: %w", source, err)
		}
		if out.Parameter != nil {
			key = aws.ToString(out.Parameter.Value)
		}
	case cfg.APIKeySecret != "":
		source = "secret " + cfg.APIKeySecret + " (API_KEY_SECRET)"
		out, err := secretsmanager.NewFromConfig(awsCfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
			SecretId: aws.String(cfg.APIKeySecret)})
		if err != nil {
			return "", fmt.Errorf("reading the API key from %s: %w", source, err)
		}
		key = aws.ToString(out.SecretString)
	default:
		return "", fmt.Errorf("no API key source: set API_KEY_PARAMETER or API_KEY_SECRET")
	}
	key = strings.TrimSpace(key) // a value written from a file ends with a newline
	if len(key) < minKeyLen {
		return "", fmt.Errorf("the API key in %s has %d characters; use at least %d (openssl rand -hex 32 makes one)", source, len(key), minKeyLen)
	}
	return key, nil
}

// authorized checks the request's bearer token against the key, in
// constant time: comparing digests hides the key's length too.
func authorized(r *http.Request, key string) *openai.Error {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return &openai.Error{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "missing_api_key",
			Message: "no API key: send it as Authorization: Bearer <key> (the OpenAI SDKs do, with api_key / apiKey set)"}
	}
	got, want := sha256.Sum256([]byte(strings.TrimSpace(token))), sha256.Sum256([]byte(key))
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		return &openai.Error{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
			Message: "incorrect API key provided"}
	}
	return nil
}
