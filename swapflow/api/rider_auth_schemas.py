"""Request and response models of riders' sign-in: codes by SMS, sign-in by code or WeChat, tokens, the
rider's own profile, and the dev SMS inbox."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from swapflow.domain.swaps import RiderStatus
from swapflow.services.rider_accounts import CODE_PATTERN, PHONE_PATTERN, RiderProfile, TokenPair

Phone = Annotated[str, Field(pattern=PHONE_PATTERN, description="E.164, such as +8613800138000")]
ReferralCode = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$", description="A channel agent's code (case-insensitive); sign-up only")
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _SignUp(_Request):
    """What a sign-in that signs a new rider up also takes (ignored for a rider who exists)."""

    name: str | None = Field(None, min_length=1, max_length=100, description="Default: from the phone / WeChat")
    city_code: str | None = Field(
        None, min_length=1, max_length=16, description="The city a new rider rides in: needed to sign up"
    )
    referral_code: ReferralCode | None = None


class CodeRequest(_Request):
    phone: Phone


class CodeSentView(BaseModel):
    phone: str
    expires_in: int = Field(description="Seconds the code is good for")
    retry_after: int = Field(description="Seconds before another code may be sent to this phone")


class PhoneSignIn(_SignUp):
    phone: Phone
    code: str = Field(pattern=CODE_PATTERN, description="The code sent by SMS")


class WeChatSignIn(_SignUp):
    code: str = Field(min_length=1, max_length=128, description="What the mini-program's wx.login() gave")


class RefreshRequest(_Request):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenView(BaseModel):
    access_token: str = Field(description="Send as Authorization: Bearer <access_token>")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds the access token lasts")
    refresh_token: str = Field(description="Single use: POST /v1/auth/refresh for the next pair")
    rider_id: str
    new_rider: bool = Field(description="This sign-in signed the rider up")

    @classmethod
    def of(cls, pair: TokenPair) -> TokenView:
        return cls(
            access_token=pair.access_token,
            expires_in=pair.expires_in,
            refresh_token=pair.refresh_token,
            rider_id=pair.rider_id,
            new_rider=pair.new_rider,
        )


class ProfileView(BaseModel):
    id: str
    name: str
    phone: str | None
    city_code: str
    status: RiderStatus
    wechat_bound: bool = Field(description="The rider signs in with WeChat")
    agent_id: str | None = Field(description="The channel agent the rider is attributed to")
    created_at: datetime | None = Field(description="When they signed up (null: a seeded rider)")

    @classmethod
    def of(cls, found: RiderProfile) -> ProfileView:
        rider = found.rider
        return cls(
            id=rider.id,
            name=rider.name,
            phone=rider.phone,
            city_code=rider.city_code,
            status=rider.status,
            wechat_bound=rider.wechat_openid is not None,
            agent_id=found.agent_id,
            created_at=rider.created_at,
        )


class SmsView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    phone: str
    text: str
    sent_at: datetime
