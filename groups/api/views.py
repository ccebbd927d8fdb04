"""Views of the groups API: each parses the request, finds the caller's account, and calls
one service (groups.services). Errors are raised, never built here: project.errors turns
them into ``{code, message, fields}``.

Authentication as the rest of the API: a device token, or the session cookie (with CSRF)
for the web pages. Only members see a group; a group id that is malformed or names no
group is ``unknown_group`` (404), one that names a group the caller is not in is
``not_a_member`` (403).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from groups import services
from keys.api.schema import AUTHENTICATED, error_responses
from keys.models import Account, Device
from project.errors import ServiceError
from protocol.errors import ErrorCode, ProtocolError
from protocol.groups import parse_group_id

from . import serializers as s

GROUP_ID_PARAMETER = OpenApiParameter(
    "group_id", str, OpenApiParameter.PATH, description="the group id: 32 lower-case hex digits"
)
USERNAME_PARAMETER = OpenApiParameter(
    "username", str, OpenApiParameter.PATH, description="a member's username"
)
# Codes of every request that names a group.
GROUP = (*AUTHENTICATED, ErrorCode.UNKNOWN_GROUP, ErrorCode.NOT_A_MEMBER)


def _caller(request: Request) -> Account:
    if isinstance(request.auth, Device):
        return request.auth.account
    account = Account.objects.filter(user=request.user).first()
    if account is None:
        raise ServiceError(ErrorCode.FORBIDDEN, "this login has no Sealpost account")
    return account


def _group_id(text: str) -> bytes:
    try:
        return parse_group_id(text)
    except ProtocolError:
        # A malformed id names no group, exactly like a well-formed unknown one.
        raise ServiceError(ErrorCode.UNKNOWN_GROUP, f"there is no group {text[:40]!r}") from None


class GroupsAPIView(APIView):
    # JSON bodies only, as the keys API.
    parser_classes = (JSONParser,)


class GroupsView(GroupsAPIView):
    @extend_schema(
        operation_id="list_groups",
        summary="The groups the caller's account is in",
        responses={200: s.GroupSummarySerializer(many=True), **error_responses(*AUTHENTICATED)},
        tags=["groups"],
    )
    def get(self, request: Request) -> Response:
        return Response(s.summary_body(services.my_groups(_caller(request))))

    @extend_schema(
        operation_id="create_group",
        summary="Create a group of the caller (its admin) and the named accounts",
        request=s.GroupCreateSerializer,
        responses={
            201: s.GroupSerializer,
            **error_responses(*AUTHENTICATED, ErrorCode.UNKNOWN_ACCOUNT, ErrorCode.GROUP_TOO_LARGE),
        },
        tags=["groups"],
    )
    def post(self, request: Request) -> Response:
        account = _caller(request)
        serializer = s.GroupCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        info = services.create_group(account, serializer.validated_data["members"])
        return Response(s.group_body(info), status=status.HTTP_201_CREATED)


class GroupView(GroupsAPIView):
    @extend_schema(
        operation_id="get_group",
        summary="A group's members, roster (devices) and roster digest",
        parameters=[GROUP_ID_PARAMETER],
        responses={200: s.GroupSerializer, **error_responses(*GROUP)},
        tags=["groups"],
    )
    def get(self, request: Request, group_id: str) -> Response:
        info = services.group_info(_caller(request), _group_id(group_id))
        return Response(s.group_body(info))


class GroupMembersView(GroupsAPIView):
    @extend_schema(
        operation_id="add_group_members",
        summary="Add members (admins only)",
        parameters=[GROUP_ID_PARAMETER],
        request=s.GroupAddSerializer,
        responses={
            200: s.GroupSerializer,
            **error_responses(*GROUP, ErrorCode.UNKNOWN_ACCOUNT, ErrorCode.GROUP_TOO_LARGE),
        },
        tags=["groups"],
    )
    def post(self, request: Request, group_id: str) -> Response:
        account = _caller(request)
        key = _group_id(group_id)
        serializer = s.GroupAddSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        info = services.add_members(account, key, serializer.validated_data["add"])
        return Response(s.group_body(info))


class GroupMemberView(GroupsAPIView):
    @extend_schema(
        operation_id="remove_group_member",
        summary="Remove a member (admins only), or leave (naming oneself)",
        description=(
            "200 with the group after removing another member; 204 after leaving (the "
            "caller no longer sees the group). When the last admin goes, the longest-"
            "standing member becomes admin; when the last member goes, the group is deleted."
        ),
        parameters=[GROUP_ID_PARAMETER, USERNAME_PARAMETER],
        request=None,
        responses={200: s.GroupSerializer, 204: None, **error_responses(*GROUP)},
        tags=["groups"],
    )
    def delete(self, request: Request, group_id: str, username: str) -> Response:
        account = _caller(request)
        info = services.remove_member(account, _group_id(group_id), username)
        if info is None or all(m.username != account.username for m in info.members):
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(s.group_body(info))


class GroupAdminView(GroupsAPIView):
    @extend_schema(
        operation_id="add_group_admin",
        summary="Make a member an admin (admins only)",
        parameters=[GROUP_ID_PARAMETER, USERNAME_PARAMETER],
        request=None,
        responses={200: s.GroupSerializer, **error_responses(*GROUP)},
        tags=["groups"],
    )
    def put(self, request: Request, group_id: str, username: str) -> Response:
        return self._set(request, group_id, username, admin=True)

    @extend_schema(
        operation_id="remove_group_admin",
        summary="Make an admin an ordinary member (admins only; not the last admin)",
        parameters=[GROUP_ID_PARAMETER, USERNAME_PARAMETER],
        request=None,
        responses={200: s.GroupSerializer, **error_responses(*GROUP)},
        tags=["groups"],
    )
    def delete(self, request: Request, group_id: str, username: str) -> Response:
        return self._set(request, group_id, username, admin=False)

    def _set(self, request: Request, group_id: str, username: str, *, admin: bool) -> Any:
        info = services.set_admin(_caller(request), _group_id(group_id), username, admin)
        return Response(s.group_body(info))
