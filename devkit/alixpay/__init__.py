"""The alixpay sandbox: a real HTTP fake of the provider on 127.0.0.1."""
