"""A bank-like program: a dict of accounts, each an object with a growing history list of tuples;
every method's ``self`` reaches the whole graph (accounts point back at their bank).

argv[1]: scale factor (default 1).
"""
import sys


class Account:
    def __init__(self, bank, number, owner, balance):
        self.bank = bank
        self.number = number
        self.owner = owner
        self.balance = balance
        self.history = []

    def deposit(self, amount, day):
        self.balance += amount
        self.history.append((day, "deposit", amount, self.balance))
        return self.balance

    def withdraw(self, amount, day):
        if amount > self.balance:
            self.history.append((day, "refused", amount, self.balance))
            return False
        self.balance -= amount
        self.history.append((day, "withdraw", amount, self.balance))
        return True


class Bank:
    def __init__(self, name):
        self.name = name
        self.accounts = {}
        self.day = 0

    def open(self, owner, balance):
        number = 1000 + len(self.accounts)
        account = Account(self, number, owner, balance)
        self.accounts[number] = account
        return account

    def transfer(self, source, target, amount):
        if self.accounts[source].withdraw(amount, self.day):
            self.accounts[target].deposit(amount, self.day)
            return True
        return False

    def total(self):
        total = 0
        for account in self.accounts.values():
            total += account.balance
        return total


def main(scale):
    bank = Bank("First Example")
    for i in range(20):
        bank.open(f"owner-{i}", 100 + 10 * i)
    moved = 0
    for day in range(60 * scale):
        bank.day = day
        for k in range(20):
            source = 1000 + (day * 7 + k) % 20
            target = 1000 + (day * 3 + k * 5 + 1) % 20
            if source != target and bank.transfer(source, target, (day + k) % 37 + 1):
                moved += 1
        if day % 10 == 0:
            assert bank.total() == sum(100 + 10 * i for i in range(20))
    print("checksum", moved, bank.total(), sum(len(a.history) for a in bank.accounts.values()))


main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
