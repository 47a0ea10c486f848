"""Request and response models only (pydantic), no logic.

- `openai`  OpenAI requests the gateway reads, the error envelope, the model list
- `admin`   admin API requests and typed listings
"""
