# The classic FastAPI JWT tutorial app, written minimal and faithful for comparison with
# jwt-gate's demo server (examples/server.rs): same routes, same SQLite-backed users.
#
#   POST /auth/register  JSON {username, email, password}      -> 201 {username, email}
#   POST /auth/token     form username, password (OAuth2)       -> {access_token, token_type}
#   GET  /auth-test      Authorization: Bearer <access_token>   -> {User: {username, id}}
#
# As in the tutorial: SQLAlchemy over SQLite, passlib's bcrypt, PyJWT with HS256, async
# route functions, one uvicorn worker. The password check runs inside the async login route,
# as the tutorial writes it.
#
# SPDX-License-Identifier: MIT

import os
from datetime import datetime, timedelta, timezone
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from passlib.context import CryptContext
from pydantic import BaseModel
from sqlalchemy import Column, Integer, String, create_engine
from sqlalchemy.orm import Session, declarative_base, sessionmaker

SECRET_KEY = os.environ.get("FASTAPI_SECRET", "a comparison secret of 32 bytes!")
ALGORITHM = "HS256"
ACCESS_TOKEN_EXPIRE_MINUTES = 15
DATABASE_URL = os.environ.get("FASTAPI_DB", "sqlite:///./fastapi-compare.db")

engine = create_engine(DATABASE_URL, connect_args={"check_same_thread": False})
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
Base = declarative_base()


class Users(Base):
    __tablename__ = "users"

    id = Column(Integer, primary_key=True, index=True)
    username = Column(String, unique=True, index=True)
    email = Column(String, unique=True)
    hashed_password = Column(String)


Base.metadata.create_all(bind=engine)

bcrypt_context = CryptContext(schemes=["bcrypt"], deprecated="auto")
oauth2_bearer = OAuth2PasswordBearer(tokenUrl="auth/token")

app = FastAPI()


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


db_dependency = Annotated[Session, Depends(get_db)]


class CreateUserRequest(BaseModel):
    username: str
    email: str
    password: str


class Token(BaseModel):
    access_token: str
    token_type: str


@app.post("/auth/register", status_code=status.HTTP_201_CREATED)
async def create_user(db: db_dependency, create_user_request: CreateUserRequest):
    if db.query(Users).filter(Users.username == create_user_request.username).first():
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail="Username taken.")
    user = Users(
        username=create_user_request.username,
        email=create_user_request.email,
        hashed_password=bcrypt_context.hash(create_user_request.password),
    )
    db.add(user)
    db.commit()
    return {"username": user.username, "email": user.email}


def authenticate_user(username: str, password: str, db: Session):
    user = db.query(Users).filter(Users.username == username).first()
    if not user:
        return False
    if not bcrypt_context.verify(password, user.hashed_password):
        return False
    return user


def create_access_token(username: str, user_id: int, expires_delta: timedelta):
    expires = datetime.now(timezone.utc) + expires_delta
    encode = {"sub": username, "id": user_id, "exp": expires}
    return jwt.encode(encode, SECRET_KEY, algorithm=ALGORITHM)


@app.post("/auth/token", response_model=Token)
async def login_for_access_token(
    form_data: Annotated[OAuth2PasswordRequestForm, Depends()], db: db_dependency
):
    user = authenticate_user(form_data.username, form_data.password, db)
    if not user:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="Could not validate user."
        )
    token = create_access_token(
        user.username, user.id, timedelta(minutes=ACCESS_TOKEN_EXPIRE_MINUTES)
    )
    return {"access_token": token, "token_type": "bearer"}


async def get_current_user(token: Annotated[str, Depends(oauth2_bearer)]):
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        username: str = payload.get("sub")
        user_id: int = payload.get("id")
        if username is None or user_id is None:
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED, detail="Could not validate user."
            )
        return {"username": username, "id": user_id}
    except jwt.InvalidTokenError:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED, detail="Could not validate user."
        )


user_dependency = Annotated[dict, Depends(get_current_user)]


@app.get("/auth-test", status_code=status.HTTP_200_OK)
async def auth_test(user: user_dependency, db: db_dependency):
    # As in the tutorial: the session is injected but the user comes from the token alone.
    # (Querying it here, from an async route with a sync session, blocks the event loop
    # while waiting for a pooled connection: past SQLAlchemy's 5 + 10 connections it stalls
    # for the pool's 30 s timeout. The demo does look its user up in SQLite.)
    return {"User": user}
